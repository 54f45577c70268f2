//! Device selection: the only place where CPU, native GPU and browser GPU differ.

use burn::tensor::Device;
use burn::tensor::wgpu::{WgpuSetup, wgpu};

use crate::{Error, Tensor, TensorData, read_f32};

/// burn's pure-Rust CPU backend (flex). Exact and always there: the reference device for
/// native tests, the `--backend cpu` of the CLI, and in the browser the engine for machines
/// without WebGPU or with only a software adapter (WebAssembly SIMD, one thread).
pub fn cpu() -> Device {
    Device::flex()
}

/// Which engine a caller asks for (`Generator.create({ backend })` in JavaScript).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// WebGPU on a hardware adapter, else the CPU engine: see [`choose_backend`].
    Auto,
    WebGpu,
    Cpu,
}

impl BackendChoice {
    /// The names JavaScript uses: `"auto"`, `"webgpu"`, `"cpu"`.
    pub const NAMES: [&str; 3] = ["auto", "webgpu", "cpu"];

    /// Parses a name from [`Self::NAMES`]; anything else is `BadInput` listing them.
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "auto" => Ok(Self::Auto),
            "webgpu" => Ok(Self::WebGpu),
            "cpu" => Ok(Self::Cpu),
            other => Err(Error::BadInput(format!(
                "backend = \"{other}\": must be one of {}",
                Self::NAMES.map(|n| format!("\"{n}\"")).join(", ")
            ))),
        }
    }
}

/// The engine that runs a model: WebGPU, or burn's CPU backend ([`cpu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    WebGpu,
    Cpu,
}

impl BackendKind {
    /// `"webgpu"` or `"cpu"`, as JavaScript's `gen.backend.kind`.
    pub fn name(self) -> &'static str {
        match self {
            Self::WebGpu => "webgpu",
            Self::Cpu => "cpu",
        }
    }
}

/// What the browser says of its WebGPU adapter (`GPUAdapterInfo`), as far as
/// [`choose_backend`] needs it.
#[derive(Clone, Debug, Default)]
pub struct AdapterDescription {
    /// `vendor`, `architecture`, `device` and `description` joined: browsers fill some.
    pub text: String,
    /// `isFallbackAdapter`; `None` where the browser does not report it.
    pub is_fallback: Option<bool>,
}

impl AdapterDescription {
    /// A software rasterizer rather than a GPU: the browser's fallback adapter, or one of
    /// the CPU implementations of WebGPU / Vulkan / D3D by name (Chromium's SwiftShader,
    /// Mesa's llvmpipe and lavapipe, Microsoft's WARP) where the flag is absent.
    pub fn is_software(&self) -> bool {
        let text = self.text.to_lowercase();
        self.is_fallback == Some(true)
            || [
                "swiftshader",
                "llvmpipe",
                "lavapipe",
                "microsoft basic render",
            ]
            .iter()
            .any(|name| text.contains(name))
    }
}

/// The engine for `choice`, and why, given the adapter the browser offered (or why it
/// offered none). `Auto` takes WebGPU on a hardware adapter and the CPU engine where
/// WebGPU is missing or only a software adapter: on SwiftShader a generation of our
/// built-in model ran ~70x slower than on the CPU engine in the same browser
/// (docs/benchmarks.md). Asking for `WebGpu` without an adapter is `NoGpu`.
pub fn choose_backend(
    choice: BackendChoice,
    adapter: Result<&AdapterDescription, &str>,
) -> Result<(BackendKind, String), Error> {
    Ok(match (choice, adapter) {
        (BackendChoice::Cpu, _) => (BackendKind::Cpu, "asked for".into()),
        (BackendChoice::WebGpu, Ok(_)) => (BackendKind::WebGpu, "asked for".into()),
        (BackendChoice::WebGpu, Err(why)) => return Err(Error::NoGpu(no_gpu_advice(why))),
        (BackendChoice::Auto, Err(why)) => (BackendKind::Cpu, format!("no WebGPU: {why}")),
        (BackendChoice::Auto, Ok(a)) if a.is_software() => (
            BackendKind::Cpu,
            "the WebGPU adapter is a software renderer, slower than the CPU engine".into(),
        ),
        (BackendChoice::Auto, Ok(_)) => (BackendKind::WebGpu, "a hardware WebGPU adapter".into()),
    })
}

/// Whether weights quantized to `bits` (8 or 4) can stay quantized on `device`, dequantized
/// inside the matmul: on GPUs both (burn-wgpu's matmul reads q8 / q4 blocks directly); on
/// burn's CPU backend 8 bits only, since its matmul with a transposed 4-bit weight gives
/// wrong results in burn 0.22, while q8 gives the expanded weights' image exactly
/// (tests/quantized.rs). Kept weights take a quarter of f32's memory, which is what lets a
/// full-size model fit in WebAssembly's 4 GiB on the browser's CPU engine.
pub fn keeps_quantized(device: &Device, bits: u32) -> bool {
    bits >= 8 || *device != cpu()
}

/// WebGPU's default `maxStorageBufferBindingSize`: the largest buffer a shader may bind on
/// every WebGPU device. We never ask for more, so what runs here runs everywhere, and the
/// native GPU tier enforces the same bound as the browser.
pub const MAX_BINDING_BYTES: u64 = 128 << 20;

/// WebGPU's default `maxBufferSize`.
pub const MAX_BUFFER_BYTES: u64 = 256 << 20;

/// The graphics API we ask wgpu for. Natively we pin it, since automatic selection can land
/// on OpenGL, which burn's kernels do not target well. In the browser there is only WebGPU.
fn graphics_api() -> wgpu::Backend {
    if cfg!(target_arch = "wasm32") {
        wgpu::Backend::BrowserWebGpu
    } else if cfg!(target_os = "macos") {
        wgpu::Backend::Metal
    } else {
        wgpu::Backend::Vulkan
    }
}

/// A GPU device we created, and why it became unusable, once it did.
struct Gpu {
    device: Device,
    failure: FailureFlag,
}

/// What each GPU device of ours runs on, asked by the kernels on every launch: behind a plain
/// lock held only to read or push, never across an await (`GPUS` is held while a device is
/// made, and a kernel must not take the wrong plan meanwhile).
static ADAPTERS: std::sync::Mutex<Vec<(Device, Adapter)>> = std::sync::Mutex::new(Vec::new());

struct Adapter {
    /// As wgpu describes it: for benchmark reports.
    description: String,
    /// A CPU-side implementation (lavapipe, SwiftShader): kernels pick other block sizes.
    software: bool,
}

/// The facts about `device`'s adapter, if it is a GPU device made by [`gpu`].
fn adapter_fact<T>(device: &Device, fact: impl Fn(&Adapter) -> T) -> Option<T> {
    let adapters = ADAPTERS.lock().ok()?;
    adapters
        .iter()
        .find(|(d, _)| d == device)
        .map(|(_, a)| fact(a))
}

/// Set once a device is lost or reports an error (out of memory above all): the error the
/// calls on it return from then on.
type FailureFlag = std::sync::Arc<std::sync::Mutex<Option<Error>>>;

fn set_once(flag: &FailureFlag, error: Error) {
    if let Ok(mut f) = flag.lock()
        && f.is_none()
    {
        *f = Some(error);
    }
}

/// Every GPU device created, the current one last.
static GPUS: async_lock::Mutex<Vec<Gpu>> = async_lock::Mutex::new(Vec::new());

/// The GPU device: WebGPU in the browser, Vulkan (or Metal) natively.
///
/// We request the wgpu device ourselves rather than letting burn do it, because burn asks
/// for every limit the adapter has: buffers up to the adapter's maximum would then work on
/// a big desktop GPU and fail on a phone. We take the adapter's limits except for buffer
/// sizes, which stay at WebGPU's defaults ([`MAX_BINDING_BYTES`], [`MAX_BUFFER_BYTES`]),
/// and all its features (shader-f16 where present).
///
/// The device is created on the first call and shared afterwards (concurrent first calls
/// wait for the one creating it). Once it is lost (a driver reset, the browser reclaiming
/// the GPU), the next call creates a new one; tensors on the lost one are gone.
/// Asynchronous because a browser hands out adapters only through promises.
pub async fn gpu() -> Result<Device, Error> {
    let mut gpus = GPUS.lock().await;
    if let Some(gpu) = gpus.last()
        && gpu.failure.lock().map(|l| l.is_none()).unwrap_or(false)
    {
        return Ok(gpu.device.clone());
    }
    let failure = FailureFlag::default();
    let setup = request_setup(failure.clone())
        .await
        .map_err(|e| Error::NoGpu(no_gpu_advice(&e)))?;
    let wgpu_device = setup.device.clone();
    let info = setup.adapter.get_info();
    let adapter = Adapter {
        description: format!(
            "{} ({:?}, driver {} {})",
            info.name, info.backend, info.driver, info.driver_info
        ),
        software: describe_adapter(&setup).is_software(),
    };
    let device = Device::wgpu_options()
        .setup(setup)
        .init()
        .map_err(|e| Error::NoGpu(no_gpu_advice(&e.to_string())))?;
    // After burn's init, which installs a handler that panics (in the browser: "unreachable
    // executed", the page's engine gone) on any error the GPU reports.
    let flag = failure.clone();
    wgpu_device.on_uncaptured_error(std::sync::Arc::new(move |e| set_once(&flag, gpu_error(e))));
    if let Ok(mut adapters) = ADAPTERS.lock() {
        adapters.push((device.clone(), adapter));
    }
    gpus.push(Gpu {
        device: device.clone(),
        failure,
    });
    Ok(device)
}

/// The error a device reported, as ours: out of memory (a buffer the GPU could not give), or
/// a failure (a validation or internal error: the work's buffers may be invalid from there).
fn gpu_error(e: wgpu::Error) -> Error {
    match e {
        // The browser's message is not passed on by wgpu ("<WebGPU Error>").
        wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory("a GPU allocation failed".into()),
        other => Error::Gpu(format!(
            "the GPU reported an error ({other}); a new device is made on the next call"
        )),
    }
}

/// Why `device` became unusable (lost, out of memory, or a GPU error), if it is a GPU device
/// of ours that did: the calls on it return this, and the next [`gpu`] makes a new one.
pub fn failure(device: &Device) -> Option<Error> {
    let gpus = GPUS.try_lock()?; // locked: a device is being created, so none has failed now
    let gpu = gpus.iter().find(|g| g.device == *device)?;
    gpu.failure.lock().ok()?.clone()
}

/// The adapter behind `device`, if it is a GPU device of ours: its name, graphics API and
/// driver as wgpu reports them (e.g. "NVIDIA H200 (Vulkan, driver NVIDIA 580.159.04)").
pub fn adapter_description(device: &Device) -> Option<String> {
    adapter_fact(device, |a| a.description.clone())
}

/// Whether `device` runs on a CPU-side implementation of the GPU API (lavapipe, SwiftShader,
/// WARP; [`AdapterDescription::is_software`]): our kernels size their work per unit for two
/// cores there and for thousands of units on a GPU. False for devices not made by [`gpu`].
pub fn is_software(device: &Device) -> bool {
    adapter_fact(device, |a| a.software).unwrap_or(false)
}

/// The adapter of `setup` as [`AdapterDescription`]: wgpu's info natively; in the browser
/// the device's `adapterInfo` too, since wgpu passes on only its description there.
fn describe_adapter(setup: &WgpuSetup) -> AdapterDescription {
    let info = setup.adapter.get_info();
    #[allow(unused_mut)]
    let mut text = format!("{} {} {}", info.name, info.driver, info.driver_info);
    #[cfg(target_arch = "wasm32")]
    if let Some(device) = setup.device.as_webgpu() {
        let device: wasm_bindgen::JsValue = device.clone().into();
        let get = |o: &wasm_bindgen::JsValue, key: &str| {
            js_sys::Reflect::get(o, &key.into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED)
        };
        let info = get(&device, "adapterInfo");
        for key in ["vendor", "architecture", "device", "description"] {
            if let Some(v) = get(&info, key).as_string() {
                text += " ";
                text += &v;
            }
        }
    }
    AdapterDescription {
        text,
        is_fallback: Some(info.device_type == wgpu::DeviceType::Cpu),
    }
}

/// [`failure`], for a read that failed: waits a little for the device to report why. In the
/// browser a read on a destroyed device fails in a task of its own, which can come before
/// the task that reports the loss (and an out-of-memory error comes as an event); without the
/// wait a lost device would read as a plain GPU error.
pub async fn failure_reported(device: &Device) -> Option<Error> {
    #[cfg(target_arch = "wasm32")]
    for _ in 0..50 {
        if let Some(failure) = failure(device) {
            return Some(failure);
        }
        sleep_ms(10).await;
    }
    failure(device)
}

/// Waits `ms` milliseconds on the browser's event loop (window or worker).
#[cfg(target_arch = "wasm32")]
async fn sleep_ms(ms: i32) {
    use wasm_bindgen::JsCast;
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        let set_timeout = js_sys::Reflect::get(&global, &"setTimeout".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        match set_timeout {
            Some(f) => {
                let _ = f.call2(&global, &resolve, &ms.into());
            }
            None => {
                let _ = resolve.call0(&wasm_bindgen::JsValue::UNDEFINED);
            }
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

async fn request_setup(lost: FailureFlag) -> Result<WgpuSetup, String> {
    let backend = graphics_api();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("no {backend:?} GPU adapter: {e}"))?;
    let adapter_limits = adapter.limits();
    let required_limits = wgpu::Limits {
        max_storage_buffer_binding_size: adapter_limits
            .max_storage_buffer_binding_size
            .min(MAX_BINDING_BYTES),
        max_buffer_size: adapter_limits.max_buffer_size.min(MAX_BUFFER_BYTES),
        ..adapter_limits
    };
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("sd-webgpu"),
            required_features: required_features(adapter.features()),
            required_limits,
            // burn pools its allocations itself.
            memory_hints: wgpu::MemoryHints::MemoryUsage,
            trace: wgpu::Trace::Off,
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
        })
        .await
        .map_err(|e| format!("the {backend:?} adapter refused a device: {e}"))?;
    device.set_device_lost_callback(move |reason, message| {
        set_once(&lost, Error::DeviceLost(format!("{reason:?}: {message}")))
    });
    Ok(WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend,
    })
}

/// The adapter's features that we ask the device for: all of them (shader-f16, subgroups, ...)
/// except the ones a device refuses unless asked for with care: mappable primary buffers
/// (slow on discrete GPUs) and wgpu's experimental ones (mesh shaders, ray tracing,
/// cooperative matrices), which NVIDIA's Vulkan driver lists and which make
/// `request_device` fail while experimental features are disabled.
fn required_features(adapter: wgpu::Features) -> wgpu::Features {
    adapter
        .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS)
        .difference(wgpu::Features::all_experimental_mask())
}

fn no_gpu_advice(why: &str) -> String {
    if cfg!(target_arch = "wasm32") {
        format!(
            "{why}. Use a browser with WebGPU enabled (Chrome/Edge 113+, Safari 26+, Firefox 141+ on \
             Windows) and check that the GPU is not blocklisted (chrome://gpu)."
        )
    } else {
        format!(
            "{why}. Install a Vulkan driver (on Debian without a GPU: `apt-get install \
             mesa-vulkan-drivers libvulkan1` gives the lavapipe software driver)."
        )
    }
}

/// Runs one small matmul on `device` and compares it with the same product computed in
/// plain Rust. Returns the largest absolute difference: a quick check that a device
/// computes, for the page and for `sd-weights devices`.
pub async fn self_check(device: &Device) -> Result<f64, Error> {
    let (m, k, n) = (64usize, 96usize, 80usize);
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let ta = Tensor::<2>::from_data(TensorData::new(a.clone(), [m, k]), device);
    let tb = Tensor::<2>::from_data(TensorData::new(b.clone(), [k, n]), device);
    let got = read_f32(ta.matmul(tb)).await?;
    let want: Vec<f32> = (0..m * n)
        .map(|ij| {
            (0..k)
                .map(|p| a[ij / n * k + p] as f64 * b[p * n + ij % n] as f64)
                .sum::<f64>() as f32
        })
        .collect();
    // Infinite for a NaN: the page and `sd-weights devices` then report a failed check.
    Ok(crate::compare::max_abs_diff(&got, &want))
}

/// Counts the GPU kernel launches the process issues while it lives: each launch is one
/// compute dispatch (cubecl's wgpu runtime records one `dispatch_workgroups` per launch).
///
/// Counted through cubecl's launch observer (`cubecl::logging::LaunchObservation`), which
/// is told of every launch, on the thread that issues it, before it is submitted; a launch
/// with an empty grid is dropped by cubecl and not counted. burn runs without its `fusion`
/// feature, so every tensor operation launches its kernels when it is called: the launches
/// of a forward pass are counted by the time it returns, before the GPU has run them. The
/// CPU backend (`flex`) launches no kernels, so nothing is counted there.
///
/// There is one observer slot per process: a second counter replaces the first while it
/// lives, and the first counts again once the second is dropped.
#[cfg(not(target_arch = "wasm32"))]
pub struct DispatchCounter {
    counts: std::sync::Arc<LaunchCounts>,
    _observation: burn::cubecl::logging::LaunchObservation,
}

/// Launches by kernel name (cubecl's `&'static str` names: no allocation per launch).
#[cfg(not(target_arch = "wasm32"))]
#[derive(Default)]
struct LaunchCounts(std::sync::Mutex<std::collections::HashMap<&'static str, u64>>);

#[cfg(not(target_arch = "wasm32"))]
impl burn::cubecl::logging::LaunchObserver for LaunchCounts {
    fn launched(&self, kernel: &'static str) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(kernel).or_default() += 1;
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl DispatchCounter {
    /// Starts counting.
    pub fn start() -> Self {
        let counts = std::sync::Arc::new(LaunchCounts::default());
        let _observation = burn::cubecl::logging::LaunchObservation::new(counts.clone());
        DispatchCounter {
            counts,
            _observation,
        }
    }

    /// Launches so far.
    pub fn total(&self) -> u64 {
        self.counts.0.lock().map(|c| c.values().sum()).unwrap_or(0)
    }

    /// Launches so far by kernel, most launched first. Names are shortened as cubecl's
    /// profiling log writes them (module paths dropped: `KernelBinop | MulOp`), then cut to
    /// the kernel and its first type argument (a matmul's names its whole tiling setup).
    pub fn by_kernel(&self) -> Vec<(String, u64)> {
        use burn::cubecl::config::{TypeNameFormatLevel, type_name_format};
        let mut merged = std::collections::BTreeMap::<String, u64>::new();
        if let Ok(counts) = self.counts.0.lock() {
            for (name, n) in counts.iter() {
                let balanced = type_name_format(name, TypeNameFormatLevel::Balanced);
                let short = balanced
                    .split(" | ")
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" | ");
                *merged.entry(short).or_default() += n;
            }
        }
        let mut list: Vec<(String, u64)> = merged.into_iter().collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        list
    }
}

/// What the device's memory pools hold now: `(bytes reserved, bytes in use)`, from burn's
/// `Device::memory_pool_usage` (cubecl's memory report summed over every pool and stream).
/// Reserved is what the GPU has given the pools (at least what is in use: pages kept for
/// reuse and padding); in use is what live tensors take. `None` on the CPU backend, which
/// reports none. cubecl keeps high-water marks only as page counts per pool, not in bytes,
/// so a peak is found by sampling this after each phase of work.
pub fn memory_usage(device: &Device) -> Option<(u64, u64)> {
    let usage = device.memory_pool_usage()?;
    Some((usage.bytes_reserved, usage.bytes_in_use))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(text: &str, is_fallback: Option<bool>) -> AdapterDescription {
        AdapterDescription {
            text: text.into(),
            is_fallback,
        }
    }

    #[test]
    fn auto_takes_webgpu_only_on_a_hardware_adapter() {
        let pick = |a: Result<&AdapterDescription, &str>| {
            choose_backend(BackendChoice::Auto, a).unwrap().0
        };
        // What Chromium reports: SwiftShader (flag and name), a real GPU, and Firefox on
        // Mesa's software driver without the flag.
        let swiftshader = adapter("google swiftshader", Some(true));
        let nvidia = adapter("nvidia ampere", Some(false));
        let llvmpipe = adapter("mesa llvmpipe (LLVM 19.1.7, 256 bits)", None);
        let unnamed_fallback = adapter("", Some(true));
        assert_eq!(pick(Ok(&swiftshader)), BackendKind::Cpu);
        assert_eq!(
            pick(Ok(&adapter("Google SwiftShader", None))),
            BackendKind::Cpu
        );
        assert_eq!(pick(Ok(&llvmpipe)), BackendKind::Cpu);
        assert_eq!(pick(Ok(&unnamed_fallback)), BackendKind::Cpu);
        assert_eq!(pick(Ok(&nvidia)), BackendKind::WebGpu);
        assert_eq!(
            pick(Ok(&adapter("apple metal-3", None))),
            BackendKind::WebGpu
        );
        assert_eq!(
            pick(Err("this browser has no navigator.gpu")),
            BackendKind::Cpu
        );
    }

    #[test]
    fn an_explicit_choice_is_kept_or_refused() {
        let swiftshader = adapter("google swiftshader", Some(true));
        let (kind, why) = choose_backend(BackendChoice::WebGpu, Ok(&swiftshader)).unwrap();
        assert_eq!((kind, why.as_str()), (BackendKind::WebGpu, "asked for"));
        let cpu = choose_backend(BackendChoice::Cpu, Ok(&adapter("nvidia", None))).unwrap();
        assert_eq!(cpu.0, BackendKind::Cpu);
        let err = choose_backend(BackendChoice::WebGpu, Err("no adapter")).unwrap_err();
        assert!(
            matches!(err, Error::NoGpu(ref w) if w.starts_with("no adapter")),
            "{err}"
        );
        let why = choose_backend(BackendChoice::Auto, Err("no adapter"))
            .unwrap()
            .1;
        assert_eq!(why, "no WebGPU: no adapter");
    }

    #[test]
    fn backend_names_parse() {
        for name in BackendChoice::NAMES {
            assert!(BackendChoice::parse(name).is_ok(), "{name}");
        }
        let err = BackendChoice::parse("gpu").unwrap_err().to_string();
        assert!(
            err.contains(r#"backend = "gpu": must be one of "auto", "webgpu", "cpu""#),
            "{err}"
        );
    }

    #[test]
    fn experimental_adapter_features_are_not_requested() {
        // What NVIDIA's Vulkan driver lists: asking for all of it made request_device fail.
        let adapter = wgpu::Features::SHADER_F16
            | wgpu::Features::MAPPABLE_PRIMARY_BUFFERS
            | wgpu::Features::EXPERIMENTAL_MESH_SHADER
            | wgpu::Features::EXPERIMENTAL_RAY_TRACING_PIPELINES
            | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        assert_eq!(required_features(adapter), wgpu::Features::SHADER_F16);
    }
}

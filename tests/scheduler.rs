//! Schedulers against diffusers 0.42 (goldens from tests/fixtures/make_scheduler_fixtures.py).
//!
//! Each case builds a scheduler by name from a model's scheduler config (diffusers'
//! `from_config`), checks timesteps, sigmas and init_noise_sigma to 1e-6 relative, then runs
//! a whole trajectory on the device: our own step outputs feed the next step, with
//! diffusers' fixed model outputs and injected noise, and every scaled model input, step
//! output and add_noise result must stay within 1e-5 of the output's scale. The configs:
//! - sd15: SD 1.5's PNDM config (leading, steps_offset 1, PLMS with skip_prk_steps);
//! - sd15_old: the same as first published, without timestep_spacing (Euler: linspace);
//! - sd2v: SD 2.x's DDIM v-prediction config (PNDM from it runs Runge-Kutta warm-up);
//! - turbo: SD-Turbo-like Euler with trailing spacing, 1 to 4 steps;
//! - cos, linear: DDPM-like cosine and linear schedules with DDPM's other defaults.
//!
//! tables.json adds timesteps / sigmas for many step counts, and which counts diffusers
//! cannot run. Where we depart from diffusers on purpose (docs/schedulers.md: "trailing"
//! spacing's extra step at timestep −1, timesteps past the training ones) the table test
//! checks our documented behaviour instead; DDIM's step to the next timestep of the schedule
//! departs only for "linspace" / "trailing" spacing, which no golden trajectory uses (see
//! the unit tests in crate/src/scheduler/). Native-only tests check errors and that typical
//! mistakes fail the goldens.

mod common;

use common::{check_close, npy, tensor};
use sd_webgpu::scheduler::{Scheduler, SchedulerConfig, SchedulerKind};
use sd_webgpu::{Device, Tensor, read_f32};
use serde_json::Value;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// Step outputs, scaled inputs, add_noise: max error / output scale.
const STEP_TOL: f64 = 1e-5;
/// Timesteps, sigmas, init_noise_sigma: relative error.
const SCHEDULE_TOL: f64 = 1e-6;

fn text(bytes: &'static [u8]) -> &'static str {
    std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("fixture is not UTF-8: {e}"))
}

/// The model configs the fixtures were made from, by the name the goldens use.
fn model_config(name: &str) -> SchedulerConfig {
    let json = match name {
        "sd15" => text(fixture!("sd15-tiny/scheduler/scheduler_config.json")),
        "sd2v" => text(fixture!("sd2-tiny/scheduler/scheduler_config.json")),
        "sd15_old" => text(fixture!("scheduler/configs/sd15_old.json")),
        "turbo" => text(fixture!("scheduler/configs/turbo.json")),
        "cos" => text(fixture!("scheduler/configs/cos.json")),
        "linear" => text(fixture!("scheduler/configs/linear.json")),
        other => panic!("no config fixture {other}"),
    };
    SchedulerConfig::from_json(json).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Case {
    name: &'static str,
    json: &'static [u8],
    npy: &'static [u8],
}

/// A golden case by name (also from `stringify!`): its metadata and its tensors.
macro_rules! case {
    ($name:expr) => {
        Case {
            name: $name,
            json: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/scheduler/",
                $name,
                ".json"
            )),
            npy: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/scheduler/",
                $name,
                ".npy"
            )),
        }
    };
}

/// Relative closeness of host numbers (exact where the golden is 0).
fn close_list(what: &str, got: &[f64], want: &[f64], tol: f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: got {} values {got:?}, want {} {want:?}",
            got.len(),
            want.len()
        ));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if !((g - w).abs() <= tol * w.abs()) {
            return Err(format!(
                "{what}[{i}]: got {g}, want {w} (relative tolerance {tol:e})\n got  {got:?}\n want {want:?}"
            ));
        }
    }
    Ok(())
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Checks the host side of a scheduler against a golden entry (case or table).
fn check_schedule(what: &str, scheduler: &Scheduler, golden: &Value) -> Result<(), String> {
    close_list(
        &format!("{what}: timesteps"),
        scheduler.timesteps(),
        &numbers(&golden["timesteps"]),
        SCHEDULE_TOL,
    )?;
    match (
        scheduler.sigmas(),
        golden.get("sigmas").filter(|s| !s.is_null()),
    ) {
        (Some(sigmas), Some(want)) => {
            let got: Vec<f64> = sigmas.iter().map(|&s| s as f64).collect();
            close_list(
                &format!("{what}: sigmas"),
                &got,
                &numbers(want),
                SCHEDULE_TOL,
            )?;
        }
        (None, None) => {}
        (got, want) => return Err(format!("{what}: sigmas {got:?}, golden {want:?}")),
    }
    let want = golden["init_noise_sigma"]
        .as_f64()
        .ok_or("golden has no init_noise_sigma")?;
    close_list(
        &format!("{what}: init_noise_sigma"),
        &[scheduler.init_noise_sigma()],
        &[want],
        SCHEDULE_TOL,
    )
}

/// Runs one golden trajectory with `config` (the case's own, or a deliberately wrong one)
/// and returns the largest error seen, relative to each compared tensor's scale.
async fn run_case_with(
    case: &Case,
    device: &Device,
    config: Option<SchedulerConfig>,
) -> Result<f64, String> {
    let meta: Value = serde_json::from_str(text(case.json)).map_err(|e| e.to_string())?;
    let config = config.unwrap_or_else(|| model_config(meta["config"].as_str().unwrap_or("")));
    let kind = SchedulerKind::parse(meta["scheduler"].as_str().unwrap_or(""))
        .map_err(|e| e.to_string())?;
    let mut scheduler = Scheduler::new(kind, &config).map_err(|e| e.to_string())?;
    scheduler
        .set_eta(meta["eta"].as_f64().unwrap_or(0.0))
        .map_err(|e| e.to_string())?;
    let steps = meta["steps"].as_u64().unwrap_or(0) as usize;
    scheduler.set_timesteps(steps).map_err(|e| e.to_string())?;
    check_schedule(case.name, &scheduler, &meta)?;

    let (shape, values) = npy(case.npy);
    let dims: [usize; 4] = [shape[1], shape[2], shape[3], shape[4]];
    let size: usize = dims.iter().product();
    let row = |r: usize| &values[r * size..(r + 1) * size];
    let at = |key: &str| meta["rows"][key].as_u64().map(|r| r as usize);
    let put = |r: usize| tensor::<4>(row(r), dims, device);

    let mut worst = 0.0f64;
    let mut compare = |what: String, got: Vec<f32>, want: &[f32]| -> Result<(), String> {
        check_close(&what, &got, want, STEP_TOL)?;
        let scale = sd_webgpu::compare::max_abs(want).max(1e-12);
        worst = worst.max(sd_webgpu::compare::max_abs_diff(&got, want) / scale);
        Ok(())
    };
    let read = |t: Tensor<4>| async move { read_f32(t).await.map_err(|e| e.to_string()) };

    let n = scheduler.timesteps().len();
    let mut sample = put(at("sample").ok_or("no sample row")?);
    for i in 0..n {
        let scaled = scheduler
            .scale_model_input(sample.clone(), i)
            .map_err(|e| e.to_string())?;
        if let Some(r) = at("scaled_inputs") {
            compare(
                format!("{}: scaled input {i}", case.name),
                read(scaled).await?,
                row(r + i),
            )?;
        }
        let model_output = put(at("model_outputs").ok_or("no model outputs")? + i);
        let noise = at("noises").map(|r| put(r + i));
        if noise.is_none() && scheduler.needs_noise(i) {
            return Err(format!(
                "{}: step {i} needs noise, the golden has none",
                case.name
            ));
        }
        sample = scheduler
            .step(model_output, i, sample, noise)
            .map_err(|e| e.to_string())?;
        compare(
            format!("{}: step {i} output", case.name),
            read(sample.clone()).await?,
            row(at("outputs").ok_or("no outputs")? + i),
        )?;
    }
    let original = put(at("add_noise_original").ok_or("no add_noise rows")?);
    let noise = put(at("add_noise_noise").ok_or("no add_noise rows")?);
    for i in 0..n {
        let noised = scheduler
            .add_noise(original.clone(), noise.clone(), i)
            .map_err(|e| e.to_string())?;
        compare(
            format!("{}: add_noise at step {i}", case.name),
            read(noised).await?,
            row(at("add_noise").ok_or("")? + i),
        )?;
    }
    Ok(worst)
}

async fn run_case(case: &Case, device: &Device) -> Result<(), String> {
    let worst = run_case_with(case, device, None).await?;
    #[cfg(not(target_arch = "wasm32"))]
    println!("{}: max error {worst:.2e} of scale", case.name);
    let _ = worst;
    Ok(())
}

macro_rules! golden_cases {
    ($($name:ident),+ $(,)?) => {
        $(
            async fn $name(device: &Device) -> Result<(), String> {
                run_case(&case!(stringify!($name)), device).await
            }
        )+
        mod golden {
            crate::on_every_device! { $($name => super::super::$name;)+ }
        }
    };
}

golden_cases!(
    sd15_pndm,
    sd15_ddim,
    sd15_ddim_eta,
    sd15_euler,
    sd15_euler_a,
    sd15_dpmpp_2m,
    sd15_dpmpp_2m_karras,
    sd15_lcm,
    sd15_old_euler,
    sd15_old_dpmpp_2m,
    sd15_old_ddim,
    sd2v_ddim,
    sd2v_ddim_eta,
    sd2v_pndm,
    sd2v_euler,
    sd2v_euler_a,
    sd2v_dpmpp_2m,
    sd2v_dpmpp_2m_karras,
    sd2v_lcm,
    turbo_euler,
    turbo_euler_4,
    turbo_euler_a,
    turbo_ddim,
    turbo_dpmpp_2m,
    cos_ddim,
    cos_dpmpp_2m,
    linear_euler,
    linear_pndm,
);

/// Our version of a table entry where we depart from diffusers 0.42 on purpose
/// (docs/schedulers.md), or `None` where we agree: `Some(None)` when we refuse what diffusers runs.
/// - "trailing" spacing where diffusers has n + 1 timesteps, the last −1: we run the n
///   asked for, diffusers' first n (the entry without that timestep and its σ);
/// - a timestep past the 1000 training ones ("leading" with steps_offset 1 at 1000 steps,
///   which diffusers' Euler runs at timestep 1000): refused.
fn where_we_depart(golden: &Value) -> Option<Option<Value>> {
    let timesteps = numbers(&golden["timesteps"]);
    if timesteps.iter().any(|&t| t >= 1000.0) {
        return Some(None);
    }
    let extra = timesteps.iter().position(|&t| t < 0.0)?;
    let mut ours = golden.clone();
    for key in ["timesteps", "sigmas"] {
        if let Some(values) = ours[key].as_array_mut() {
            values.remove(extra);
        }
    }
    Some(Some(ours))
}

/// Timesteps, sigmas and init_noise_sigma for many step counts and every config, and
/// refusal exactly where diffusers fails (set_timesteps raising, or a step running past the
/// schedule). Host arithmetic only, so it also checks the browser's float functions. The
/// seven entries where we depart from diffusers on purpose are checked against our own
/// documented behaviour instead ([`where_we_depart`]).
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn schedules_match_diffusers_for_many_step_counts() {
    let tables: Vec<Value> = serde_json::from_str(text(fixture!("scheduler/tables.json"))).unwrap();
    let mut failures = Vec::new();
    let mut departures = Vec::new();
    for entry in &tables {
        let (config, name, steps) = (
            entry["config"].as_str().unwrap(),
            entry["scheduler"].as_str().unwrap(),
            entry["steps"].as_u64().unwrap(),
        );
        let what = format!("{config} {name} {steps} steps");
        let mut scheduler =
            Scheduler::new(SchedulerKind::parse(name).unwrap(), &model_config(config)).unwrap();
        let result = scheduler.set_timesteps(steps as usize);
        let diffusers_fails = !entry["error"].is_null();
        let (want, refuse) = match where_we_depart(entry).filter(|_| !diffusers_fails) {
            None => (entry.clone(), diffusers_fails),
            Some(ours) => {
                departures.push(what.clone());
                match ours {
                    Some(ours) => (ours, false),
                    None => (entry.clone(), true),
                }
            }
        };
        match (result, refuse) {
            (Ok(()), false) => {
                if let Err(e) = check_schedule(&what, &scheduler, &want) {
                    failures.push(e);
                }
            }
            (Err(_), true) => {}
            (Ok(()), true) => failures.push(format!(
                "{what}: runs; diffusers fails ({}) or we refuse on purpose",
                entry["why"]
            )),
            (Err(e), false) => failures.push(format!("{what}: we fail ({e}), diffusers does not")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} schedules differ:\n{}",
        failures.len(),
        tables.len(),
        failures.join("\n")
    );
    let mut want = [
        "turbo ddim 61",
        "turbo pndm 61",
        "turbo euler 61",
        "turbo euler-a 61",
        "turbo dpmpp-2m 61",
        "sd15 euler 1000",
        "sd15 euler-a 1000",
    ]
    .map(|w| format!("{w} steps"))
    .to_vec();
    want.sort();
    departures.sort();
    assert_eq!(
        departures, want,
        "the entries where we depart from diffusers"
    );
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::*;
    use sd_webgpu::Error;

    fn cpu() -> Device {
        sd_webgpu::device::cpu()
    }

    fn golden_fails(case: Case, config: SchedulerConfig) -> bool {
        pollster::block_on(run_case_with(&case, &cpu(), Some(config))).is_err()
    }

    #[test]
    fn unknown_scheduler_name_lists_the_names() {
        let err = SchedulerKind::parse("dpm++").unwrap_err();
        assert!(matches!(err, Error::BadInput(_)), "{err:?}");
        let message = err.to_string();
        for kind in SchedulerKind::ALL {
            assert!(message.contains(kind.name()), "{message}");
            assert_eq!(kind.name().parse::<SchedulerKind>().unwrap(), kind);
        }
    }

    #[test]
    fn zero_steps_and_too_many_steps_are_errors() {
        let config = model_config("sd15");
        for kind in SchedulerKind::ALL {
            let mut scheduler = Scheduler::new(kind, &config).unwrap();
            for steps in [0, 1001] {
                let err = scheduler.set_timesteps(steps).unwrap_err();
                assert!(
                    matches!(err, Error::BadInput(_)) && err.to_string().contains("steps"),
                    "{kind} {steps}: {err}"
                );
            }
        }
        // LCM is limited to its distillation grid (original_inference_steps = 50).
        let err = Scheduler::new(SchedulerKind::Lcm, &config)
            .unwrap()
            .set_timesteps(51)
            .unwrap_err();
        assert!(
            err.to_string().contains("original_inference_steps"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_config_values_name_the_field() {
        let sd15 = model_config("sd15");
        let cases = [
            (
                SchedulerKind::Ddim,
                sd15.clone().with("beta_schedule", "sigmoid"),
                "beta_schedule",
            ),
            (
                SchedulerKind::Euler,
                sd15.clone().with("trained_betas", vec![0.1, 0.2]),
                "trained_betas",
            ),
            (
                SchedulerKind::Ddim,
                sd15.clone().with("thresholding", true),
                "thresholding",
            ),
            (
                SchedulerKind::DpmPp2m,
                sd15.clone().with("prediction_type", "flow_prediction"),
                "prediction_type",
            ),
            (
                SchedulerKind::EulerAncestral,
                sd15.clone().with("prediction_type", "sample"),
                "prediction_type",
            ),
            (
                SchedulerKind::Pndm,
                sd15.clone().with("timestep_spacing", "karras"),
                "timestep_spacing",
            ),
            (
                SchedulerKind::Euler,
                sd15.clone().with("use_exponential_sigmas", true),
                "use_exponential_sigmas",
            ),
            (
                SchedulerKind::Lcm,
                sd15.clone().with("rescale_betas_zero_snr", true),
                "rescale_betas_zero_snr",
            ),
            (
                SchedulerKind::Ddim,
                sd15.clone().with("steps_offset", -1),
                "steps_offset",
            ),
        ];
        for (kind, config, field) in cases {
            let err = Scheduler::new(kind, &config).unwrap_err();
            assert!(
                matches!(err, Error::BadConfig(_)) && err.to_string().contains(field),
                "{kind}: {err}"
            );
        }
        // A field only another scheduler reads is ignored, as by diffusers' from_config.
        Scheduler::new(
            SchedulerKind::Euler,
            &sd15.clone().with("thresholding", true),
        )
        .unwrap();
        // An unknown own class names _class_name and lists what to pick instead.
        let json = r#"{"_class_name": "UniPCMultistepScheduler"}"#;
        let err = Scheduler::of_model(&SchedulerConfig::from_json(json).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("_class_name") && err.contains("dpmpp-2m-karras"),
            "{err}"
        );
    }

    #[test]
    fn the_models_own_scheduler_comes_from_class_name() {
        assert_eq!(
            SchedulerKind::of_model(&model_config("sd15")).unwrap(),
            SchedulerKind::Pndm
        );
        assert_eq!(
            SchedulerKind::of_model(&model_config("sd2v")).unwrap(),
            SchedulerKind::Ddim
        );
        assert_eq!(
            SchedulerKind::of_model(&model_config("turbo")).unwrap(),
            SchedulerKind::Euler
        );
        let dpm = SchedulerConfig::from_json(r#"{"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true, "lambda_min_clipped": -Infinity}"#).unwrap();
        assert_eq!(
            SchedulerKind::of_model(&dpm).unwrap(),
            SchedulerKind::DpmPp2mKarras
        );
        let order3 = dpm.with("solver_order", 3);
        assert!(
            SchedulerKind::of_model(&order3)
                .unwrap_err()
                .to_string()
                .contains("solver_order")
        );
    }

    /// from_config: Euler's default spacing is "linspace", DDIM's "leading"; a config
    /// without timestep_spacing gives each its own.
    #[test]
    fn missing_fields_take_the_targets_defaults() {
        let old = model_config("sd15_old");
        let timesteps = |kind| {
            let mut s = Scheduler::new(kind, &old).unwrap();
            s.set_timesteps(7).unwrap();
            s.timesteps().to_vec()
        };
        assert_eq!(timesteps(SchedulerKind::Euler)[..2], [999.0, 832.5]);
        assert_eq!(timesteps(SchedulerKind::Ddim)[..2], [853.0, 711.0]);
        // With the field present, Euler follows it.
        let mut euler = Scheduler::new(
            SchedulerKind::Euler,
            &old.with("timestep_spacing", "leading"),
        )
        .unwrap();
        euler.set_timesteps(7).unwrap();
        assert_eq!(euler.timesteps()[..2], [853.0, 711.0]);
    }

    #[test]
    fn leading_instead_of_trailing_changes_turbo_timesteps() {
        let meta: Value = serde_json::from_str(text(case!("turbo_euler").json)).unwrap();
        let mut wrong = Scheduler::new(
            SchedulerKind::Euler,
            &model_config("turbo").with("timestep_spacing", "leading"),
        )
        .unwrap();
        wrong.set_timesteps(1).unwrap();
        assert!(
            close_list(
                "timesteps",
                wrong.timesteps(),
                &numbers(&meta["timesteps"]),
                SCHEDULE_TOL
            )
            .is_err()
        );
        assert!(golden_fails(
            case!("turbo_euler"),
            model_config("turbo").with("timestep_spacing", "leading")
        ));
    }

    /// Issue 16: "trailing" 61 steps run 61 timesteps, the last 15 (diffusers 0.42: 62, the
    /// last −1); PNDM has its one repeated timestep more.
    #[test]
    fn trailing_spacing_runs_the_steps_asked_for() {
        for kind in [
            SchedulerKind::Ddim,
            SchedulerKind::Pndm,
            SchedulerKind::Euler,
            SchedulerKind::EulerAncestral,
            SchedulerKind::DpmPp2m,
        ] {
            let mut s = Scheduler::new(kind, &model_config("turbo")).unwrap();
            s.set_timesteps(61).unwrap();
            let want = if kind == SchedulerKind::Pndm { 62 } else { 61 };
            assert_eq!(
                (s.timesteps().len(), s.timesteps().last().copied()),
                (want, Some(15.0)),
                "{kind}"
            );
        }
    }

    #[test]
    fn v_prediction_treated_as_epsilon_fails_the_golden() {
        assert!(golden_fails(
            case!("sd2v_ddim"),
            model_config("sd2v").with("prediction_type", "epsilon")
        ));
        assert!(golden_fails(
            case!("sd2v_dpmpp_2m"),
            model_config("sd2v").with("prediction_type", "epsilon")
        ));
    }

    /// DDIM from SD 1.5's PNDM config clips x₀ (DDIM's default clip_sample=True): not
    /// clipping fails the golden.
    #[test]
    fn ddim_from_pndm_config_clips_like_diffusers() {
        assert!(golden_fails(
            case!("sd15_ddim"),
            model_config("sd15").with("clip_sample", false)
        ));
    }

    #[test]
    fn misuse_is_an_error() {
        let device = cpu();
        let x = tensor::<4>(&[0.5; 16], [1, 4, 2, 2], &device);
        let mut s = Scheduler::new(SchedulerKind::EulerAncestral, &model_config("sd15")).unwrap();
        let err = s.step(x.clone(), 0, x.clone(), None).unwrap_err();
        assert!(err.to_string().contains("set_timesteps"), "{err}");
        s.set_timesteps(4).unwrap();
        let err = s.step(x.clone(), 0, x.clone(), None).unwrap_err();
        assert!(err.to_string().contains("noise"), "{err}");
        let err = s
            .step(x.clone(), 4, x.clone(), Some(x.clone()))
            .unwrap_err();
        assert!(err.to_string().contains("step index"), "{err}");
        let other = tensor::<4>(&[0.5; 8], [1, 2, 2, 2], &device);
        assert!(s.step(other, 0, x.clone(), Some(x.clone())).is_err());

        let mut dpm = Scheduler::new(SchedulerKind::DpmPp2m, &model_config("sd15")).unwrap();
        dpm.set_timesteps(4).unwrap();
        dpm.step(x.clone(), 1, x.clone(), None).unwrap();
        let err = dpm.step(x.clone(), 3, x.clone(), None).unwrap_err();
        assert!(err.to_string().contains("consecutive"), "{err}");
        dpm.reset();
        dpm.step(x.clone(), 0, x.clone(), None).unwrap();

        let mut ddim = Scheduler::new(SchedulerKind::Ddim, &model_config("sd15")).unwrap();
        for eta in [f64::NAN, -0.1, 1.5] {
            assert!(
                matches!(ddim.set_eta(eta), Err(Error::BadInput(_))),
                "{eta}"
            );
        }
    }

    #[test]
    fn noise_is_needed_where_diffusers_draws_it() {
        let config = model_config("sd15");
        let needs = |kind, eta: f64| {
            let mut s = Scheduler::new(kind, &config).unwrap();
            s.set_eta(eta).unwrap();
            s.set_timesteps(4).unwrap();
            (0..4).map(|i| s.needs_noise(i)).collect::<Vec<_>>()
        };
        assert_eq!(needs(SchedulerKind::Ddim, 0.0), [false; 4]);
        assert_eq!(needs(SchedulerKind::Ddim, 0.5), [true; 4]);
        assert_eq!(
            needs(SchedulerKind::EulerAncestral, 0.0),
            [true, true, true, false]
        );
        assert_eq!(needs(SchedulerKind::Lcm, 0.0), [true, true, true, false]);
        assert_eq!(needs(SchedulerKind::DpmPp2mKarras, 0.0), [false; 4]);
    }
}

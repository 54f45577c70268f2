//! The denoising loop shared by text to image, image to image and inpainting.

use burn::tensor::{Int, Tensor, TensorData};

use super::{
    GenerateParams, Image, Mask, Mode, Noise, Progress, Timings, guidance_scale_embedding, preview,
};
use crate::model::StableDiffusion;
use crate::scheduler::Scheduler;
use crate::{Error, read_f32};

/// What every denoising step needs besides the latents, made once before the loop.
struct Denoising {
    /// The UNet's text context, `[b, 77, d]` (b = 2 with classifier-free guidance).
    context: Tensor<3>,
    /// LCM's guidance embedding `[1, dim]`, for UNets with `time_cond_proj_dim`.
    timestep_cond: Option<Tensor<2>>,
    /// The guidance scale, when classifier-free guidance runs (a UNet batch of 2).
    cfg_scale: Option<f32>,
    /// The starting noise `[1, c, h, w]`; 4-channel inpainting re-noises the known region
    /// with it each step.
    noise: Tensor<4>,
    /// The samplers' per-step noise: stream `1 + k` at step `k`.
    noise_source: Noise,
    inpainting: Option<Inpainting>,
}

/// What inpainting adds to the loop, all on the device.
struct Inpainting {
    /// The mask at latent size, 1 = repaint: `[1, 1, h, w]`.
    mask: Tensor<4>,
    /// 9-channel UNets: `[mask, masked image latents]` per batch entry, `[b, 1 + c, h, w]`.
    unet_extra: Option<Tensor<4>>,
    /// 4-channel UNets: the image's latents, re-noised and pasted outside the mask each step.
    image_latents: Option<Tensor<4>>,
}

impl StableDiffusion {
    /// The `[b, 77, hidden]` text embeddings of `prompt` on the model's device.
    fn text_embeddings(&self, prompt: &str, clip_skip: usize) -> Result<Tensor<3>, Error> {
        let ids: Vec<i64> = self
            .tokenizer
            .encode(prompt)?
            .into_iter()
            .map(i64::from)
            .collect();
        let n = ids.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &self.device);
        self.text_encoder.forward(ids, clip_skip)
    }

    /// The UNet's text context as the pipeline makes it (diffusers' `encode_prompt`): with
    /// classifier-free guidance (`cfg`) `[uncond, cond]`, `[2, 77, d]`, the negative prompt
    /// encoded at the last layer; else the prompt's alone, `[1, 77, d]`. Queued on the device,
    /// not waited for.
    pub fn encode_prompt(
        &self,
        prompt: &str,
        negative_prompt: &str,
        clip_skip: usize,
        cfg: bool,
    ) -> Result<Tensor<3>, Error> {
        let cond = self.text_embeddings(prompt, clip_skip)?; // [1, 77, d]
        if !cfg {
            return Ok(cond);
        }
        let uncond = self.text_embeddings(negative_prompt, 1)?; // [1, 77, d]
        Ok(Tensor::cat(vec![uncond, cond], 0)) // [2, 77, d]
    }

    /// Whether a generation at `guidance_scale` runs classifier-free guidance (a UNet batch
    /// of 2): above 1, for UNets without LCM's guidance embedding (`time_cond_proj_dim`).
    pub fn uses_cfg(&self, guidance_scale: f64) -> bool {
        guidance_scale > 1.0 && self.unet_config.time_cond_proj_dim.is_none()
    }

    /// `[1, 3, H, W]` in `[-1, 1]` from an RGB image in `[0, 1]` (diffusers' `2x − 1`).
    fn image_tensor(&self, image: &Image) -> Tensor<4> {
        let hwc = TensorData::new(image.rgb.clone(), [1, image.height, image.width, 3]);
        Tensor::<4>::from_data(hwc, &self.device)
            .permute([0, 3, 1, 2])
            .mul_scalar(2.0)
            .sub_scalar(1.0)
    }

    /// The VAE's latent mean of `image` (`[1, 3, H, W]` in `[-1, 1]`) × `scaling_factor`.
    fn encode_image(&self, image: Tensor<4>) -> Tensor<4> {
        self.vae
            .encode_mean(image)
            .mul_scalar(self.vae.scaling_factor() as f32) // [1, c, h, w]
    }

    /// Generates one image: text to image, image to image or inpainting, by `params`
    /// ([`GenerateParams::mode`]). `on_step` is called after each denoising step; returning
    /// `false` stops with [`Error::Cancelled`].
    pub async fn generate(
        &self,
        params: &GenerateParams,
        on_step: impl FnMut(Progress) -> bool,
    ) -> Result<Image, Error> {
        Ok(self.generate_timed(params, on_step).await?.0)
    }

    /// [`Self::generate`], also returning how long each phase took. The phases are timed by
    /// waiting for the GPU at their ends (a one-value read after the text encoder and after
    /// the last step; none inside the loop).
    ///
    /// The phases of diffusers' `StableDiffusionPipeline.__call__`: 1. check the inputs,
    /// 2. encode the prompt, 3. prepare the latents, 4. the denoising loop, 5. decode.
    pub async fn generate_timed(
        &self,
        params: &GenerateParams,
        mut on_step: impl FnMut(Progress) -> bool,
    ) -> Result<(Image, Timings), Error> {
        let started = now_ms();
        // 1. Inputs.
        params.validate(self)?;
        let mut scheduler = params.build_scheduler(self)?;
        let g = params.guidance_scale;
        let cfg = self.uses_cfg(g);

        // 2. The prompt.
        let context = self.encode_prompt(
            &params.prompt,
            &params.negative_prompt,
            params.clip_skip,
            cfg,
        )?; // [b, 77, d]
        finished(context.clone()).await?;
        let text_done = now_ms();

        // 3. The starting latents.
        let noise_source = Noise::new(params.seed);
        let (mut latents, noise, inpainting) =
            self.prepare_latents(params, &scheduler, &noise_source, cfg)?; // [1, c, h, w]
        let denoising = Denoising {
            context,
            timestep_cond: self.unet_config.time_cond_proj_dim.map(|dim| {
                let emb = guidance_scale_embedding(g - 1.0, dim);
                Tensor::<2>::from_data(TensorData::new(emb, [1, dim]), &self.device) // [1, dim]
            }),
            cfg_scale: cfg.then_some(g as f32),
            noise,
            noise_source,
            inpainting,
        };

        // 4. The denoising loop.
        let first = params.first_step();
        let total = scheduler.timesteps().len() - first;
        for k in 0..total {
            let wants_preview =
                params.preview_every > 0 && ((k + 1) % params.preview_every == 0 || k + 1 == total);
            let (next, x0) =
                self.denoise_step(&mut scheduler, &denoising, latents, first, k, wants_preview)?;
            latents = next;
            let preview = match x0 {
                Some(x0) => preview::preview(x0).await?,
                None => None,
            };
            if !on_step(Progress {
                step: k + 1,
                total,
                preview,
            }) {
                return Err(Error::Cancelled);
            }
            yield_now().await;
        }
        finished(latents.clone()).await?;
        let steps_done = now_ms();

        // 5. The image.
        let rgb = self.decode_latents(latents).await?;
        let done = now_ms();
        let timings = Timings {
            text_ms: text_done - started,
            steps: total,
            steps_ms: steps_done - text_done,
            vae_ms: done - steps_done,
            total_ms: done - started,
        };
        Ok((
            Image {
                width: params.width,
                height: params.height,
                rgb,
            },
            timings,
        ))
    }

    /// The starting latents `[1, c, h, w]`, the noise they were made from, and what
    /// inpainting needs each step (diffusers' `prepare_latents` and `prepare_mask_latents`):
    /// text to image and inpainting at strength 1 start from noise × `init_noise_sigma`;
    /// image to image and inpainting below 1 from the image's latents noised to the first
    /// step that runs. The noise is `params.latents` if given, else `noise_source`'s stream 0.
    fn prepare_latents(
        &self,
        params: &GenerateParams,
        scheduler: &Scheduler,
        noise_source: &Noise,
        cfg: bool,
    ) -> Result<(Tensor<4>, Tensor<4>, Option<Inpainting>), Error> {
        let f = self.vae_scale_factor();
        let shape = [
            1,
            self.latent_channels(),
            params.height / f,
            params.width / f,
        ];
        let noise = match &params.latents {
            Some(latents) => latents.clone(),
            None => noise_source.normal(0, shape.iter().product()),
        };
        let noise = Tensor::<4>::from_data(TensorData::new(noise, shape), &self.device); // [1, c, h, w]

        let from_noise = params.mode() == Mode::Inpaint && params.strength() == 1.0;
        let image = params
            .init_image
            .as_ref()
            .map(|image| self.image_tensor(image)); // [1, 3, H, W]
        let inpainting = match (&params.mask, &image) {
            (Some(mask), Some(image)) => Some(self.inpainting(mask, image.clone(), cfg)),
            _ => None,
        };
        let image_latents = match (&inpainting, &image) {
            (
                Some(Inpainting {
                    image_latents: Some(l),
                    ..
                }),
                _,
            ) => Some(l.clone()),
            (_, Some(image)) if !from_noise => Some(self.encode_image(image.clone())),
            _ => None,
        };
        let latents = match &image_latents {
            Some(l) if !from_noise => {
                scheduler.add_noise(l.clone(), noise.clone(), params.first_step())?
            }
            _ => noise
                .clone()
                .mul_scalar(scheduler.init_noise_sigma() as f32),
        }; // [1, c, h, w]
        Ok((latents, noise, inpainting))
    }

    /// Step `k` (from 0) of the loop, at `first + k` of the scheduler's timesteps: diffusers'
    /// loop body. The UNet on the latents (twice with classifier-free guidance, then
    /// `uncond + g·(text − uncond)`), the scheduler's step, and for 4-channel inpainting the
    /// known region pasted back, noised to the next timestep. Returns the next latents
    /// `[1, c, h, w]` and, if `want_x0`, the predicted clean latents for a preview.
    fn denoise_step(
        &self,
        scheduler: &mut Scheduler,
        d: &Denoising,
        latents: Tensor<4>,
        first: usize,
        k: usize,
        want_x0: bool,
    ) -> Result<(Tensor<4>, Option<Tensor<4>>), Error> {
        let index = first + k;
        let t = scheduler.timesteps()[index];
        let last = index + 1 == scheduler.timesteps().len();
        let shape = latents.dims(); // [1, c, h, w]
        let input = if d.cfg_scale.is_some() {
            Tensor::cat(vec![latents.clone(), latents.clone()], 0)
        } else {
            latents.clone()
        };
        let input = scheduler.scale_model_input(input, index)?; // [b, c, h, w]
        let input = match d.inpainting.as_ref().and_then(|i| i.unet_extra.clone()) {
            Some(extra) => Tensor::cat(vec![input, extra], 1), // [b, 2c + 1, h, w]
            None => input,
        };
        let out = self.unet.forward(
            input,
            &[t as f32],
            d.context.clone(),
            d.timestep_cond.clone(),
        )?; // [b, c, h, w]
        let pred = match d.cfg_scale {
            Some(g) => {
                let uncond = out.clone().narrow(0, 0, 1);
                let text = out.narrow(0, 1, 1);
                uncond.clone() + (text - uncond).mul_scalar(g) // [1, c, h, w]
            }
            None => out,
        };
        let x0 = if want_x0 {
            Some(scheduler.pred_original(pred.clone(), index, latents.clone())?)
        } else {
            None
        };
        let step_noise = if scheduler.needs_noise(index) {
            let values = d.noise_source.normal(1 + k as u64, shape.iter().product());
            Some(Tensor::<4>::from_data(
                TensorData::new(values, shape),
                &self.device,
            ))
        } else {
            None
        };
        let mut latents = scheduler.step(pred, index, latents, step_noise)?;

        if let Some(Inpainting {
            mask,
            image_latents: Some(known),
            ..
        }) = &d.inpainting
        {
            // diffusers: the known region is the image noised to the next timestep.
            let known = if last {
                known.clone()
            } else {
                scheduler.add_noise(known.clone(), d.noise.clone(), index + 1)?
            };
            let mask = mask.clone().expand(shape); // [1, c, h, w]
            latents = known * mask.clone().neg().add_scalar(1.0) + latents * mask; // [1, c, h, w]
        }
        Ok((latents, x0))
    }

    /// The image's RGB values, `H × W × 3` in `[0, 1]`, from the final latents
    /// `[1, c, h, w]` (diffusers' `decode_latents`: `vae.decode(z / scaling_factor)`, then
    /// `x / 2 + 0.5` clamped).
    async fn decode_latents(&self, latents: Tensor<4>) -> Result<Vec<f32>, Error> {
        let z = latents.div_scalar(self.vae.scaling_factor() as f32);
        let image = self.vae.decode(z); // [1, 3, H, W]
        let image = image
            .div_scalar(2.0)
            .add_scalar(0.5)
            .clamp(0.0, 1.0)
            .permute([0, 2, 3, 1]); // [1, H, W, 3]
        read_f32(image).await
    }

    /// The mask at latent size and, by UNet kind, what inpainting needs each step.
    /// `image`: `[1, 3, H, W]` in `[-1, 1]`.
    fn inpainting(&self, mask: &Mask, image: Tensor<4>, cfg: bool) -> Inpainting {
        let f = self.vae_scale_factor();
        let (h, w) = (mask.height / f, mask.width / f);
        // torch's nearest interpolation by an integer factor takes pixel (f·i, f·j).
        let small: Vec<f32> = (0..h * w)
            .map(|i| {
                if mask.repaint((i / w) * f * mask.width + (i % w) * f) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let small = Tensor::<4>::from_data(TensorData::new(small, [1, 1, h, w]), &self.device);
        if self.unet.in_channels() == self.latent_channels() {
            return Inpainting {
                mask: small,
                unet_extra: None,
                image_latents: Some(self.encode_image(image)),
            };
        }
        let keep: Vec<f32> = (0..mask.values.len())
            .map(|i| if mask.repaint(i) { 0.0 } else { 1.0 })
            .collect();
        let keep = Tensor::<4>::from_data(
            TensorData::new(keep, [1, 1, mask.height, mask.width]),
            &self.device,
        );
        let masked = self.encode_image(image * keep); // [1, c, h, w]
        let extra = Tensor::cat(vec![small.clone(), masked], 1); // [1, 1 + c, h, w]
        let extra = if cfg {
            Tensor::cat(vec![extra.clone(), extra], 0)
        } else {
            extra
        }; // [b, 1 + c, h, w]
        Inpainting {
            mask: small,
            unet_extra: Some(extra),
            image_latents: None,
        }
    }
}

/// Waits until the GPU has computed `tensor` (by reading one value of it back).
async fn finished<const D: usize>(tensor: Tensor<D>) -> Result<(), Error> {
    let one = tensor.reshape([-1]).narrow(0, 0, 1);
    read_f32(one).await.map(|_| ())
}

/// Milliseconds on a monotonic clock (the page's `performance.now()` in the browser).
pub fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        let global = js_sys::global();
        let performance = js_sys::Reflect::get(&global, &"performance".into()).ok();
        let now = performance
            .as_ref()
            .and_then(|p| js_sys::Reflect::get(p, &"now".into()).ok())
            .and_then(|f| wasm_bindgen::JsCast::dyn_into::<js_sys::Function>(f).ok())
            .and_then(|f| {
                f.call0(performance.as_ref().expect("performance exists"))
                    .ok()
            })
            .and_then(|v| v.as_f64());
        now.unwrap_or_else(js_sys::Date::now)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        EPOCH
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
            * 1000.0
    }
}

/// Gives the browser's event loop a turn between steps, so the page stays responsive and
/// cancellation is seen; natively a no-op.
async fn yield_now() {
    #[cfg(target_arch = "wasm32")]
    {
        use wasm_bindgen::JsCast;
        let promise = js_sys::Promise::new(&mut |resolve, _| {
            let global = js_sys::global();
            let set_timeout = js_sys::Reflect::get(&global, &"setTimeout".into()).ok();
            match set_timeout.and_then(|f| f.dyn_into::<js_sys::Function>().ok()) {
                Some(f) => {
                    let _ = f.call2(&global, &resolve, &0.into());
                }
                None => {
                    let _ = resolve.call0(&wasm_bindgen::JsValue::UNDEFINED);
                }
            }
        });
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
}

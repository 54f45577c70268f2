//! The denoising loop shared by text to image, image to image and inpainting.

use burn::tensor::{Int, Tensor, TensorData};

use super::{
    GenerateParams, Image, Mask, Mode, Noise, Progress, Timings, guidance_scale_embedding, preview,
};
use crate::model::StableDiffusion;
use crate::{Error, read_f32};

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
    fn encode_prompt(&self, prompt: &str, clip_skip: usize) -> Result<Tensor<3>, Error> {
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

    /// The UNet's text context as the pipeline makes it: with classifier-free guidance
    /// (`cfg`) `[uncond, cond]`, `[2, 77, d]`, the negative prompt encoded at the last layer;
    /// else the prompt's alone, `[1, 77, d]`. Queued on the device, not waited for.
    pub fn encode_text(
        &self,
        prompt: &str,
        negative_prompt: &str,
        clip_skip: usize,
        cfg: bool,
    ) -> Result<Tensor<3>, Error> {
        let cond = self.encode_prompt(prompt, clip_skip)?; // [1, 77, d]
        if !cfg {
            return Ok(cond);
        }
        let uncond = self.encode_prompt(negative_prompt, 1)?; // [1, 77, d]
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
    pub async fn generate_timed(
        &self,
        params: &GenerateParams,
        mut on_step: impl FnMut(Progress) -> bool,
    ) -> Result<(Image, Timings), Error> {
        let started = now_ms();
        params.validate(self)?;
        let mut scheduler = params.build_scheduler(self)?;
        let device = &self.device;
        let mode = params.mode();
        let g = params.guidance_scale;
        let cfg = self.uses_cfg(g);

        let context = self.encode_text(
            &params.prompt,
            &params.negative_prompt,
            params.clip_skip,
            cfg,
        )?; // [b, 77, d]
        finished(context.clone()).await?;
        let text_done = now_ms();

        let f = self.vae_scale_factor();
        let shape = [
            1,
            self.latent_channels(),
            params.height / f,
            params.width / f,
        ];
        let count: usize = shape.iter().product();
        let noise_source = Noise::new(params.seed);
        let noise = match &params.latents {
            Some(latents) => latents.clone(),
            None => noise_source.normal(0, count),
        };
        let noise = Tensor::<4>::from_data(TensorData::new(noise, shape), device); // [1, c, h, w]

        let first = params.first_step();
        let timesteps = scheduler.timesteps()[first..].to_vec();
        let total = timesteps.len();
        let strength_max = params.strength() == 1.0;
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
            (_, Some(image)) if !(mode == Mode::Inpaint && strength_max) => {
                Some(self.encode_image(image.clone()))
            }
            _ => None,
        };
        let mut latents = match &image_latents {
            Some(l) if !(mode == Mode::Inpaint && strength_max) => {
                scheduler.add_noise(l.clone(), noise.clone(), first)?
            }
            _ => noise
                .clone()
                .mul_scalar(scheduler.init_noise_sigma() as f32),
        }; // [1, c, h, w]

        let timestep_cond = self.unet_config.time_cond_proj_dim.map(|dim| {
            let emb = guidance_scale_embedding(g - 1.0, dim);
            Tensor::<2>::from_data(TensorData::new(emb, [1, dim]), device) // [1, dim]
        });

        for (k, &t) in timesteps.iter().enumerate() {
            let index = first + k;
            let input = if cfg {
                Tensor::cat(vec![latents.clone(), latents.clone()], 0)
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(input, index)?; // [b, c, h, w]
            let input = match inpainting.as_ref().and_then(|i| i.unet_extra.clone()) {
                Some(extra) => Tensor::cat(vec![input, extra], 1), // [b, 2c + 1, h, w]
                None => input,
            };
            let b = input.dims()[0];
            let t = Tensor::<1>::from_data(TensorData::new(vec![t as f32; b], [b]), device);
            let out = self
                .unet
                .forward(input, t, context.clone(), timestep_cond.clone())?; // [b, c, h, w]
            let pred = if cfg {
                let uncond = out.clone().narrow(0, 0, 1);
                let text = out.narrow(0, 1, 1);
                uncond.clone() + (text - uncond).mul_scalar(g as f32) // [1, c, h, w]
            } else {
                out
            };
            let wants_preview =
                params.preview_every > 0 && ((k + 1) % params.preview_every == 0 || k + 1 == total);
            let x0 = if wants_preview {
                Some(scheduler.pred_original(pred.clone(), index, latents.clone())?)
            } else {
                None
            };
            let step_noise = if scheduler.needs_noise(index) {
                let values = noise_source.normal(1 + k as u64, count);
                Some(Tensor::<4>::from_data(
                    TensorData::new(values, shape),
                    device,
                ))
            } else {
                None
            };
            latents = scheduler.step(pred, index, latents, step_noise)?;

            if let Some(Inpainting {
                mask,
                image_latents: Some(known),
                ..
            }) = &inpainting
            {
                // diffusers: the known region is the image noised to the next timestep.
                let known = if k + 1 < total {
                    scheduler.add_noise(known.clone(), noise.clone(), index + 1)?
                } else {
                    known.clone()
                };
                let mask = mask.clone().expand(shape); // [1, c, h, w]
                latents = known * mask.clone().neg().add_scalar(1.0) + latents * mask; // [1, c, h, w]
            }

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

        let z = latents.div_scalar(self.vae.scaling_factor() as f32);
        let image = self.vae.decode(z); // [1, 3, H, W]
        let image = image
            .div_scalar(2.0)
            .add_scalar(0.5)
            .clamp(0.0, 1.0)
            .permute([0, 2, 3, 1]); // [1, H, W, 3]
        let rgb = read_f32(image).await?;
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

//! The text AUTOMATIC1111's web UI stores in a PNG's `parameters` text chunk, which image
//! viewers and model sites (Civitai, ...) read back. `sd-weights generate` writes it into
//! its PNGs and the JS API hands it with every image (`GeneratedImage.parameters`), so the
//! page writes the same text.

use super::{GenerateParams, Mode};
use crate::scheduler::SchedulerKind;

impl GenerateParams {
    /// The A1111 `parameters` text for an image made with these parameters by `sampler`
    /// (the scheduler that ran: these parameters' own, else the model's) with the model
    /// named `model` (its folder's name; the field is left out when `None`):
    ///
    /// ```text
    /// a red circle
    /// Negative prompt: blurry
    /// Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: shapes
    /// ```
    ///
    /// A1111's layout (`modules/processing.py`, `create_infotext`): the prompt, the negative
    /// prompt (its line left out when empty, as A1111 does), then `Name: value` fields. Ours: `Denoising strength` for image to image and
    /// inpainting, `Clip skip` when not 1 and `Eta` when not 0, after the others. Sampler
    /// names as A1111 writes them ([`SchedulerKind::a1111_name`]); numbers in their shortest
    /// form (`7.5`, `3`).
    pub fn a1111_parameters(&self, sampler: SchedulerKind, model: Option<&str>) -> String {
        let mut fields = vec![
            format!("Steps: {}", self.steps),
            format!("Sampler: {}", sampler.a1111_name()),
            format!("CFG scale: {}", self.guidance_scale),
            format!("Seed: {}", self.seed),
            format!("Size: {}x{}", self.width, self.height),
        ];
        if let Some(model) = model {
            fields.push(format!("Model: {model}"));
        }
        if self.mode() != Mode::Txt2Img {
            fields.push(format!("Denoising strength: {}", self.strength()));
        }
        if self.clip_skip != 1 {
            fields.push(format!("Clip skip: {}", self.clip_skip));
        }
        if self.eta != 0.0 {
            fields.push(format!("Eta: {}", self.eta));
        }
        let negative = match self.negative_prompt.as_str() {
            "" => String::new(),
            text => format!("\nNegative prompt: {text}"),
        };
        // A1111 strips the whole text (an empty prompt leaves no empty first line).
        format!("{}{negative}\n{}", self.prompt, fields.join(", "))
            .trim()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Image;

    #[test]
    fn a1111_parameters_are_laid_out_as_a1111_writes_them() {
        let p = GenerateParams {
            prompt: "a red circle".into(),
            negative_prompt: "blurry".into(),
            steps: 20,
            guidance_scale: 7.5,
            seed: 42,
            width: 64,
            height: 64,
            ..Default::default()
        };
        assert_eq!(
            p.a1111_parameters(SchedulerKind::EulerAncestral, Some("shapes")),
            "a red circle\nNegative prompt: blurry\n\
             Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: shapes"
        );
        // Whole numbers without a fraction; image to image adds the strength; clip skip and
        // eta when set; no model name, no field; no negative prompt, no line.
        let p = GenerateParams {
            guidance_scale: 3.0,
            negative_prompt: String::new(),
            init_image: Some(Image {
                width: 64,
                height: 64,
                rgb: vec![0.5; 64 * 64 * 3],
            }),
            strength: Some(0.6),
            clip_skip: 2,
            eta: 0.5,
            ..p
        };
        assert_eq!(
            p.a1111_parameters(SchedulerKind::DpmPp2mKarras, None),
            "a red circle\n\
             Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 3, Seed: 42, Size: 64x64, \
             Denoising strength: 0.6, Clip skip: 2, Eta: 0.5"
        );
    }
}

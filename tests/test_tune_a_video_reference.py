"""Tune-A-Video against references on the same tiny random SD 2.x weights (eps and v):

- before tuning, the inflated model samples what diffusers' StableDiffusionPipeline samples
  (same weights, prompt embedding, noise, DDIM steps, guidance 12.5): frame 0 of a video and
  every frame of a video whose frames share their noise are SD's images; every frame of a
  video with its own noise per frame is what the pipeline samples with showlab's sparse-causal
  attention (keys and values of frames 0 and i-1) put into its UNet;
- a tuned model (random W^Q and temporal attention) inverts a clip and edits it, frame for
  frame, as showlab's code does: its UNet (diffusers' UNet2DConditionModel with the sparse-causal
  attention and the temporal attention after each transformer block), DDIM inversion with the
  empty prompt (diffusers' DDIMInverseScheduler), then the pipeline from the inverted latents.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from sd_reference import TAV_UNET, sd_scheduler, tiny_unet, tiny_vae, transformer_blocks, write_sd_file
from tav_helpers import moving_square, write_clip
from test_train_helpers import one_thread  # noqa: F401

PROMPT, FRAMES, SIZE, STEPS, GUIDANCE = "a panda is skiing", 4, 64, 8, 12.5


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    unet, vae = tiny_unet(0, **TAV_UNET), tiny_vae(1)
    return write_sd_file(tmp_path_factory.mktemp("sd") / "sd.safetensors", unet, vae), unet, vae


def _ours(path, prediction: str):
    from svdcli.families import family_for
    from svdcli.families.tune_a_video.base import load_base
    from svdcli.families.tune_a_video.sampling import tav_model

    base = load_base(path, prediction=prediction, text="tiny")
    return tav_model(family_for("tune_a_video"), base, frames=FRAMES, size=(SIZE, SIZE))


def _sample_ours(model, noise: torch.Tensor, cfg: float = GUIDANCE, invert=None) -> torch.Tensor:
    """What `svd sample` runs (the family's inputs, guidance, sampling), from the given noise."""
    from svdcli.sample.options import SampleOptions, resolve

    family = model.family
    opts = resolve(SampleOptions(frames=FRAMES, steps=STEPS, min_cfg=cfg, max_cfg=cfg, width=SIZE, height=SIZE,
                                 prompt=PROMPT, invert=invert), model, None, print)
    inputs = replace(family.sampling_inputs(model, None, opts, "cpu", torch.float32), noise=noise)
    with torch.no_grad():
        return family.sample(model, inputs, opts, family.guided_denoiser(model, opts, None),
                             family.sigmas(model, opts.steps, "cpu"), None)


def _pipeline(unet, vae, prediction: str):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet,
                                   scheduler=sd_scheduler(prediction), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample_sd(pipe, model, latents: torch.Tensor, cfg: float = GUIDANCE) -> torch.Tensor:
    """The pipeline on a batch of latents, with our text tower's embeddings of the prompt and of ''."""
    context = model.base.text([PROMPT, ""]).float()                      # (2, L, D)
    n = latents.shape[0]
    with torch.no_grad():
        return pipe(prompt_embeds=context[:1].expand(n, -1, -1), negative_prompt_embeds=context[1:].expand(n, -1, -1),
                    latents=latents, num_inference_steps=STEPS, guidance_scale=cfg, eta=0.0, height=SIZE,
                    width=SIZE, output_type="latent").images


class SparseCausalProcessor:
    """showlab's SparseCausalAttention as a diffusers attention processor (their eq. 2): queries of
    frame i, keys and values of frames 0 and i-1 ((b f) rows, frames of a video consecutive)."""

    def __init__(self, frames: int):
        self.frames = frames

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        f = self.frames
        former = [0] + list(range(f - 1))

        def first_and_former(z):                                             # (b f) d c -> (b f) 2d c
            z = z.reshape(-1, f, *z.shape[1:])
            return torch.cat([z[:, [0] * f], z[:, former]], dim=2).flatten(0, 1)

        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(first_and_former(attn.to_k(hidden_states)))
        v = attn.head_to_batch_dim(first_and_former(attn.to_v(hidden_states)))
        out = attn.batch_to_head_dim(torch.bmm(attn.get_attention_scores(q, k, None), v))
        return attn.to_out[1](attn.to_out[0](out))


def _temporal_hook(norm, attn, frames: int):
    """showlab's temporal attention after a transformer block: h + attn_temp(norm_temp(h)) over frames."""

    def hook(module, args, out):
        bf, d, c = out.shape
        h = out.reshape(bf // frames, frames, d, c).transpose(1, 2).reshape(-1, frames, c)    # (b f) d c -> (b d) f c
        h = attn(norm(h)) + h
        return h.reshape(bf // frames, d, frames, c).transpose(1, 2).reshape(bf, d, c)

    return hook


def _showlab_unet(unet, ours=None):
    """`unet` with sparse-causal self-attention; with `ours` (our tuned UNet) also its W^Q and the
    temporal attention after every block, their weights copied from ours by layer name."""
    from diffusers.models.attention_processor import Attention, AttnProcessor

    unet.set_attn_processor({name: SparseCausalProcessor(FRAMES) if ".attn1." in name else AttnProcessor()
                             for name in unet.attn_processors})
    hooks = []
    if ours is not None:
        state = ours.state_dict()
        for path, block in transformer_blocks(unet).items():
            for layer in ("attn1.to_q", "attn2.to_q"):
                block.get_submodule(layer).weight.data.copy_(state[f"{path}.{layer}.weight"])
            norm = torch.nn.LayerNorm(block.norm1.normalized_shape)
            attn = Attention(query_dim=norm.normalized_shape[0], heads=block.attn1.heads,
                             dim_head=block.attn1.to_q.out_features // block.attn1.heads)
            norm.load_state_dict({k.split("norm_temp.")[1]: v for k, v in state.items()
                                  if k.startswith(f"{path}.temporal.norm_temp.")})
            attn.load_state_dict({k.split("attn_temp.")[1]: v for k, v in state.items()
                                  if k.startswith(f"{path}.temporal.attn_temp.")})
            hooks.append(block.register_forward_hook(_temporal_hook(norm, attn.eval(), FRAMES)))
    return hooks


def _restore(unet, hooks) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    for h in hooks:
        h.remove()
    unet.set_attn_processor(AttnProcessor2_0())


def _assert_frames_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """float32 through two implementations of the same UNet, 8 DDIM steps (and 8 of inversion) at
    guidance 12.5: measured max |diff| / max |ref| 2.5e-6 .. 1.3e-5 (eps, v); 1e-4 leaves rounding
    room, while swapped guidance branches, a wrong key frame, a missing temporal layer, the
    inversion's time label or the clip's frame stride are off by 3e-2 to 1.7."""
    scale = float(ref.abs().max())
    for i in range(ref.shape[0]):
        err = float((ours[i] - ref[i]).abs().max()) / scale
        assert err < 1e-4, f"{what}: frame {i} differs by {err:.2e} of the latents' magnitude"


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_untuned_model_samples_what_stable_diffusion_samples_frame_for_frame(sd, prediction):
    path, unet, vae = sd
    model = _ours(path, prediction)
    pipe = _pipeline(unet, vae, prediction)
    noise = torch.randn(FRAMES, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(3))
    images = _sample_sd(pipe, model, noise)                         # FRAMES independent SD images
    video = _sample_ours(model, noise)
    _assert_frames_close(video[:1], images[:1], "frame 0 vs SD")
    assert float((video[1:] - images[1:]).abs().max()) > 0.1 * float(images.abs().max())   # later frames see frame 0
    same = _sample_ours(model, noise[:1].expand(FRAMES, -1, -1, -1).clone())
    _assert_frames_close(same, images[:1].expand(FRAMES, -1, -1, -1), "shared noise vs SD")
    hooks = _showlab_unet(unet)
    try:
        _assert_frames_close(video, _sample_sd(pipe, model, noise), "video vs SD with sparse-causal attention")
    finally:
        _restore(unet, hooks)
    # decoding: our VAE on the latents is diffusers' on the same latents
    with torch.no_grad():
        ours = model.family.decode(model, video, replace(model.defaults, frames=FRAMES))
        ref = vae.decode(video / vae.config.scaling_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_tuned_model_inverts_and_edits_a_clip_as_the_official_code_does(sd, prediction, tmp_path):
    from diffusers import DDIMInverseScheduler

    from svdcli.families.tune_a_video.sampling import read_clip

    path, unet, vae = sd
    unet = copy.deepcopy(unet)                                    # its W^Q will be the tuned ones
    model = _ours(path, prediction)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():   # as if tuned: new W^Q, a non-zero temporal attention
        for name, p in model.denoiser.net.named_parameters():
            if "to_q" in name or ".temporal." in name:
                p.copy_(torch.randn(p.shape, generator=gen) / (p.shape[-1] ** 0.5 if p.ndim > 1 else 10))
    clip = write_clip(tmp_path / "clip.mp4", moving_square(frames=2 * FRAMES))
    edited = _sample_ours(model, torch.zeros(FRAMES, 4, SIZE // 8, SIZE // 8), invert=clip)

    pixels = read_clip(clip, FRAMES, SIZE, SIZE, stride=2)           # the official sample_frame_rate 2
    hooks = _showlab_unet(unet, model.denoiser.net)
    try:
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
            inverse = DDIMInverseScheduler(**{k: v for k, v in sd_scheduler(prediction).config.items()
                                              if not k.startswith("_")})
            inverse.set_timesteps(STEPS)
            empty = model.base.text([""]).float().expand(FRAMES, -1, -1)
            for t in inverse.timesteps:                               # showlab's ddim_inversion(prompt="")
                latents = inverse.step(unet(latents, t, encoder_hidden_states=empty).sample, t, latents).prev_sample
        reference = _sample_sd(_pipeline(unet, vae, prediction), model, latents)
    finally:
        _restore(unet, hooks)
    _assert_frames_close(edited, reference, "inverted and edited clip")

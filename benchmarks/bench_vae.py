"""VAE decode speed: our temporal decoder against diffusers' AutoencoderKLTemporalDecoder.

Both hold the same full-size SVD VAE weights (random, converted with `vae_state_to_diffusers`),
decode the same latents, and must agree (max abs diff printed). Each timing is the best of
`REPEATS` calls, after one warm-up call, with the three variants interleaved.
  - CPU: one 4-frame video at an 8x12 latent (64x96 px), whole and in chunks of 2.
  - GPU (when CUDA is visible): one 14-frame video at 72x128 (576x1024 px) in float16, whole
    and in chunks of 7, with peak memory.
"""
from __future__ import annotations

import time

import torch

REPEATS = 3


def best_times(fns: dict, device: str) -> dict[str, float]:
    """Best of REPEATS per function, calls interleaved so a busy machine slows all alike."""
    for fn in fns.values():
        fn()  # warm-up: kernel selection, allocator
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(REPEATS):
        for name, fn in fns.items():
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def build_pair(device: str, dtype: torch.dtype):
    from diffusers import AutoencoderKLTemporalDecoder

    from svdcli.models.vae import VAEConfig, VideoAutoencoder, vae_state_to_diffusers

    torch.manual_seed(0)
    ours = VideoAutoencoder(VAEConfig.svd()).eval()
    with torch.no_grad():  # non-zero mixers so the temporal path matters
        for name, p in ours.named_parameters():
            if name.endswith("mix_factor"):
                p.uniform_(-2.0, 2.0)
    ref = AutoencoderKLTemporalDecoder(down_block_types=("DownEncoderBlock2D",) * 4,
                                       block_out_channels=(128, 256, 512, 512), layers_per_block=2).eval()
    ref.load_state_dict(vae_state_to_diffusers(ours.state_dict()), strict=True)
    return ours.to(device, dtype), ref.to(device, dtype)


@torch.no_grad()
def run_case(device: str, dtype: torch.dtype, frames: int, hw: tuple[int, int], chunk: int) -> None:
    ours, ref = build_pair(device, dtype)
    z = torch.randn(frames, 4, *hw, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    label = f"{device} {str(dtype).removeprefix('torch.')} {frames} frames, latent {hw[0]}x{hw[1]}"
    diff = (ours.decode(z, frames) - ref.decode(z, num_frames=frames).sample).abs().max().item()
    print(f"{label}: max abs diff ours vs diffusers {diff:.2e}", flush=True)
    fns = {
        "ours whole": lambda: ours.decode(z, frames),
        f"ours chunks of {chunk}": lambda: ours.decode(z, frames, chunk=chunk),
        "diffusers whole": lambda: ref.decode(z, num_frames=frames).sample,
    }
    times = best_times(fns, device)
    for name, t in times.items():
        print(f"  {name}: {t * 1000:.0f} ms", flush=True)
    print(f"  ours/diffusers time ratio (whole): {times['ours whole'] / times['diffusers whole']:.2f}")
    if device == "cuda":
        for name in ("ours whole", f"ours chunks of {chunk}"):
            torch.cuda.reset_peak_memory_stats()
            fns[name]()
            print(f"  {name}: peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    run_case("cpu", torch.float32, frames=4, hw=(8, 12), chunk=2)
    if torch.cuda.is_available():
        run_case("cuda", torch.float16, frames=14, hw=(72, 128), chunk=7)
    else:
        print("cuda: not run (no GPU visible)")


if __name__ == "__main__":
    main()

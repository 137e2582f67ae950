"""LoRA on the temporal attention: every wrapped projection trains, and the merged export is
the same network as the wrapped one."""
from __future__ import annotations

import pytest
import torch

from random_weights import randomize_
from test_train_helpers import one_thread  # noqa: F401 - one torch thread on the shared 2 cores
from svdcli.models.config import UNetConfig
from svdcli.models.unet import VideoUNet
from svdcli.models.lora import LoRALinear, apply_lora, merge_lora_state

RANK, ALPHA = 4, 8.0          # scale alpha / rank = 2, so a merge that forgets it is caught
B, T = 2, 2
PROJECTIONS = {f"attn{i}.{p}" for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")}


def _cfg() -> UNetConfig:
    return UNetConfig.tiny(channel_mult=(1, 2), attention_resolutions=(1, 2))


def _inputs(tokens: int):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B * T, 8, 8, 8, generator=g)
    ts = torch.randn(B * T, generator=g)
    ctx = torch.randn(B, tokens, 40, generator=g).repeat_interleave(T, dim=0)  # one context per video
    return x, ts, ctx, torch.randn(B * T, 24, generator=g)


def _plain_unet() -> VideoUNet:
    unet = VideoUNet(_cfg())
    randomize_(unet, 1)  # the zero output layers of a fresh UNet would give every LoRA zero gradient
    return unet


def _lora_unet() -> tuple[VideoUNet, dict[str, LoRALinear]]:
    torch.manual_seed(0)  # LoRA A matrices
    unet = _plain_unet()
    names = apply_lora(unet, RANK, ALPHA)
    return unet, {n: unet.get_submodule(n) for n in names}


def _loss(unet, tokens: int) -> torch.Tensor:
    x, ts, ctx, y = _inputs(tokens)
    return unet(x, ts, ctx, y, T).square().mean()


@pytest.fixture(scope="module")
def trained():
    """A LoRA UNet after three AdamW steps on a 3-token context (every projection matters)."""
    unet, wrapped = _lora_unet()
    initial = {n: (m.lora_A.detach().clone(), m.lora_B.detach().clone()) for n, m in wrapped.items()}
    base = {k: v.clone() for k, v in unet.state_dict().items() if "lora" not in k}
    opt = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-2)
    first_grads = None
    for _ in range(3):
        opt.zero_grad()
        _loss(unet, tokens=3).backward()
        if first_grads is None:
            first_grads = {n: m.lora_B.grad for n, m in wrapped.items()}
        opt.step()
    return unet, wrapped, initial, first_grads, base


def test_lora_wraps_every_temporal_attention_projection(trained):
    from svdcli.models.attention import VideoTransformerBlock

    unet, wrapped, *_ = trained
    blocks = {n.rsplit(".attn", 1)[0] for n in wrapped}
    assert blocks == {n for n, m in unet.named_modules() if isinstance(m, VideoTransformerBlock)}
    for block in blocks:
        assert {n[len(block) + 1:] for n in wrapped if n.startswith(block + ".")} == PROJECTIONS


def test_every_wrapped_projection_gets_gradient_and_changes(trained):
    unet, wrapped, initial, first_grads, base = trained
    no_grad = [n for n, g in first_grads.items() if g is None or not g.abs().sum()]
    assert not no_grad, f"LoRA matrices without gradient: {no_grad}"
    for name, m in wrapped.items():  # A moves once B is nonzero, from the second step on
        a0, b0 = initial[name]
        assert not torch.equal(m.lora_A, a0) and not torch.equal(m.lora_B, b0), name
    now = unet.state_dict()
    assert all(torch.equal(now[k], v) for k, v in base.items())  # only the LoRA matrices train


def test_one_context_token_gives_q_and_k_of_cross_attention_exactly_zero_gradient():
    """SVD's context is one CLIP token: softmax over one key is 1, so attn2's q/k cannot matter.
    Their LoRA matrices still get a (zero) gradient, as the full attention would give them."""
    unet, wrapped = _lora_unet()
    _loss(unet, tokens=1).backward()
    for name, m in wrapped.items():
        dead = name.endswith(("attn2.to_q", "attn2.to_k"))
        assert m.lora_B.grad is not None, name
        assert (m.lora_B.grad.abs().sum() == 0) == dead, name


@pytest.mark.parametrize("tokens", [1, 3])
def test_merged_lora_is_the_same_network(trained, tokens):
    unet = trained[0]
    merged = VideoUNet(_cfg())
    merged.load_state_dict(merge_lora_state(unet.state_dict(), ALPHA / RANK), strict=True)
    plain = _plain_unet()
    with torch.no_grad():
        x, ts, ctx, y = _inputs(tokens)
        want, got, before = unet(x, ts, ctx, y, T), merged(x, ts, ctx, y, T), plain(x, ts, ctx, y, T)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)  # the merged file's W + BA is float32
    assert (want - before).abs().max() > 1e-3  # the LoRA changed the network: the check has teeth


def test_fresh_lora_starts_from_the_base_model():
    unet, _ = _lora_unet()
    plain = VideoUNet(_cfg())
    plain.load_state_dict(merge_lora_state(unet.state_dict(), ALPHA / RANK), strict=True)
    with torch.no_grad():
        x, ts, ctx, y = _inputs(3)
        torch.testing.assert_close(unet(x, ts, ctx, y, T), plain(x, ts, ctx, y, T), atol=1e-6, rtol=0)


# --- LoRA files: `svd sample --lora` applies them, `svd convert --merge-lora` folds them in -----
def _file_lora(base_state, path, seed: int, rank: int = 4, alpha: float = 8.0):
    """A LoRA file for the UNet `base_state`, with random (nonzero) A and B."""
    from svdcli.models.lora import base_digest, lora_state
    from svdcli.models.lora_file import save_lora_file

    unet = VideoUNet(UNetConfig.tiny())
    unet.load_state_dict(base_state)
    torch.manual_seed(seed)
    apply_lora(unet, rank, alpha)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.05)
    return save_lora_file(path, lora_state(unet.state_dict()), rank=rank, alpha=alpha,
                          target="temporal_attention", base_digest=base_digest(base_state))


@pytest.fixture(scope="module")
def lora_setup(tmp_path_factory):
    """A tiny checkpoint, two LoRA files trained (here: drawn) on it, and the checkpoint with the
    first merged in at scale 0.7 by `svd convert --merge-lora` (not the base of either LoRA)."""
    from PIL import Image
    from typer.testing import CliRunner

    from svdcli.cli.main import app
    from svdcli.families.svd.lora import stored_unet
    from svdcli.families.svd.tiny import write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("lora")
    ckpt = write_tiny_checkpoint(folder / "base.safetensors", frames=3, width=64, height=64, seed=0)
    base = stored_unet(ckpt)
    Image.fromarray(_image()).save(folder / "cond.png")
    pan = _file_lora(base, folder / "pan_right.safetensors", seed=1)
    merged = folder / "merged.safetensors"
    result = CliRunner().invoke(app, ["convert", str(ckpt), "--to", "ours", "--out", str(merged),
                                      "--merge-lora", str(pan), "--lora-scale", "0.7"])
    assert result.exit_code == 0, result.output
    return {"png": folder / "cond.png", "ckpt": ckpt, "base": base, "pan": pan, "merged": merged,
            "zoom": _file_lora(base, folder / "zoom_in.safetensors", seed=2)}


def _unet_out(unet, seed: int = 5):
    """The tiny SVD UNet on fixed inputs (one video of 3 frames, the 1-token image context), in
    float64: with random weights it amplifies float32 rounding to ~1e-3, which would hide a real
    difference between applied and merged LoRAs."""
    g = torch.Generator().manual_seed(seed)
    x, ts = torch.randn(3, 8, 8, 8, generator=g), torch.randn(3, generator=g)
    ctx, y = torch.randn(1, 1, 40, generator=g).repeat(3, 1, 1), torch.randn(3, 24, generator=g)
    unet.double()
    with torch.no_grad():
        return unet(*(t.double() for t in (x, ts, ctx, y)), 3)


def _sample(pipe, loras=(), seed: int = 0):
    from svdcli.sample.pipeline import SampleOptions

    opts = SampleOptions(steps=1, seed=seed, lora=list(loras) or None)
    return pipe.generate(_image(), opts, warn=lambda m: None).frames


def _pipe(ckpt):
    from svdcli.sample.pipeline import VideoPipeline

    return VideoPipeline.from_checkpoint(ckpt, device="cpu")


def _image():
    return (torch.arange(64 * 64 * 3) % 251).reshape(64, 64, 3).numpy().astype("uint8")


def test_lora_file_holds_only_the_lora_matrices_and_what_they_fit(lora_setup):
    from svdcli.models.lora import base_digest
    from svdcli.models.lora_file import read_lora_file

    lora = read_lora_file(lora_setup["pan"])
    assert lora.tensors and all(k.endswith((".lora_A", ".lora_B")) for k in lora.tensors)
    assert (lora.rank, lora.alpha, lora.target) == (4, 8.0, "temporal_attention")
    assert lora.base_digest == base_digest(lora_setup["base"])
    lora_bytes = sum(t.numel() * t.element_size() for t in lora.tensors.values())
    unet_bytes = sum(t.numel() * t.element_size() for t in lora_setup["base"].values())
    assert lora_bytes < 0.1 * unet_bytes
    assert lora_setup["pan"].stat().st_size < lora_bytes + 64 * 1024  # tensors plus a small header


def test_base_digest_is_the_same_in_another_storage_dtype(lora_setup):
    from svdcli.models.lora import base_digest

    base = lora_setup["base"]
    half_exact = {k: v.half().float() for k, v in base.items()}  # values fp16 can hold exactly
    assert base_digest({k: v.half() for k, v in half_exact.items()}) == base_digest(half_exact)
    changed = dict(base)
    key = next(k for k in base if k.endswith("attn1.to_q.weight"))
    changed[key] = base[key].clone()
    changed[key].view(-1)[0] += 1e-3
    assert base_digest(changed) != base_digest(base)


def test_sampling_with_a_lora_at_scale_zero_is_the_base_model_exactly(lora_setup):
    pipe = _pipe(lora_setup["ckpt"])
    base = _sample(pipe)
    zero = _sample(pipe, [(lora_setup["pan"], 0.0)])
    one = _sample(pipe, [(lora_setup["pan"], 1.0)])
    assert (zero == base).all()
    assert (one.astype(int) - base).__abs__().max() > 0  # the LoRA changes the video: the check has teeth
    assert (_sample(pipe) == base).all()  # and the next video without it is the base model's again


def test_applied_lora_equals_the_merged_checkpoint(lora_setup):
    from svdcli.models.lora import apply_loras
    from svdcli.models.lora_file import read_loras
    from svdcli.sample.pipeline import load_model

    applied = load_model(lora_setup["ckpt"]).unet
    plain = _unet_out(applied)
    apply_loras(applied, read_loras([(lora_setup["pan"], 0.7)]))
    want, got = _unet_out(applied), _unet_out(load_model(lora_setup["merged"]).unet)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)  # the merged file's W + BA is float32
    assert (want - plain).abs().max() > 1e-2
    assert _sample(_pipe(lora_setup["merged"])).shape == (3, 64, 64, 3)  # a whole checkpoint: it samples


def test_two_loras_add(lora_setup):
    from svdcli.models.lora import apply_loras, merge_loras
    from svdcli.models.lora_file import read_loras
    from svdcli.sample.pipeline import load_model

    base = lora_setup["base"]
    pan, zoom = read_loras([(lora_setup["pan"], 1.0), (lora_setup["zoom"], 0.5)])
    both, one, other = merge_loras(base, [pan, zoom]), merge_loras(base, [pan]), merge_loras(base, [zoom])
    changed = [k for k in base if not torch.equal(both[k], base[k])]
    assert changed and all(".time_stack." in k for k in changed)
    for k in changed:
        torch.testing.assert_close(both[k] - base[k], (one[k] - base[k]) + (other[k] - base[k]),
                                   atol=1e-6, rtol=0)
    applied = load_model(lora_setup["ckpt"]).unet
    apply_loras(applied, [pan, zoom])
    merged = VideoUNet(UNetConfig.tiny())
    merged.load_state_dict(both)
    torch.testing.assert_close(_unet_out(applied), _unet_out(merged), atol=2e-5, rtol=0)


def test_a_lora_of_another_base_model_is_refused(lora_setup, tmp_path):
    """The checkpoint with the LoRA merged in is another model: the LoRA does not go on top."""
    from typer.testing import CliRunner

    from svdcli.cli.main import app
    from svdcli.errors import SvdError

    with pytest.raises(SvdError, match="trained on another base model"):  # e.g. merged in already
        _sample(_pipe(lora_setup["merged"]), [(lora_setup["pan"], 1.0)])
    def run(*args):
        result = CliRunner().invoke(*args)
        result.text = " ".join(result.output.split())  # the console wraps long lines
        return result

    out = run(app, ["convert", str(lora_setup["merged"]), "--to", "ours", "--out", str(tmp_path / "m.safetensors"),
                    "--merge-lora", str(lora_setup["pan"])])
    assert out.exit_code != 0 and "trained on another base model" in out.text
    assert not (tmp_path / "m.safetensors").exists()
    out = run(app, ["sample", "-c", str(lora_setup["merged"]), "--lora", str(lora_setup["pan"]), "--steps", "1", "-i", str(lora_setup["png"]),
                    "-o", str(tmp_path / "v.gif"), "--no-progress"])
    assert out.exit_code != 0 and "trained on another base model" in out.text
    out = run(app, ["sample", "-c", str(lora_setup["ckpt"]), "--lora", str(lora_setup["pan"]), "--lora-scale", "1",
                    "--lora-scale", "2", "-i", str(lora_setup["png"]), "-o", str(tmp_path / "v.gif"), "--no-progress"])
    assert out.exit_code != 0 and "2 --lora-scale values for 1 --lora" in out.text
    out = run(app, ["sample", "-c", str(lora_setup["ckpt"]), "--lora", str(lora_setup["ckpt"]), "-i", str(lora_setup["png"]),
                    "-o", str(tmp_path / "v.gif"), "--no-progress"])
    assert out.exit_code != 0 and "is not a LoRA file" in out.text

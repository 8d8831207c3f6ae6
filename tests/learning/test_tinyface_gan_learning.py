"""The tiny-face GAN's generator learns to super-resolve: on held-out synthetic tiny faces (LR 16x16,
4x bicubic down-sampling of 64x64 HR crops of faces in unseen scenes), G2 beats bicubic
up-sampling, the strongest trivial up-sampler, in PSNR.

The demo config (configs/demo/tinyface_gan.yaml: 16-channel generator with a bicubic residual,
slim VGG19-layout discriminator), bounded to ``BATCHES`` batches on a cached set of
``TRAIN_SCENES`` scenes. The untrained residual generator is exactly bicubic up-sampling (its
output convolutions start at zero), so beating bicubic by ``MARGIN_DB`` needs learned detail.
Measured while writing this test (seed 0): PSNR on 51 held-out face crops, bicubic 26.61 dB,
G2 27.49 dB (+0.88 dB).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli import main
from tests.support import budget_args

REPO = Path(__file__).resolve().parents[2]
BATCHES = 400
TRAIN_SCENES = 160
VAL_SCENES = 40
MARGIN_DB = 0.3


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (N,) of [0, 1] images."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp(min=1e-10))


def face_psnr(module, loader) -> tuple[float, float, int]:
    """Mean PSNR of bicubic and G2 over the face crops of ``loader`` and their number."""
    bicubic, g2 = [], []
    module.eval()
    with torch.no_grad():
        for batch in loader:
            faces = batch["is_face"]
            if not bool(faces.any()):
                continue
            out = module.super_resolve(batch["lr"][faces])
            bicubic.append(_psnr(out["bicubic"], batch["hr"][faces]))
            g2.append(_psnr(out["g2"], batch["hr"][faces]))
    b, g = torch.cat(bicubic), torch.cat(g2)
    return float(b.mean()), float(g.mean()), int(b.numel())


@pytest.mark.slow
def test_g2_beats_bicubic_on_held_out_tiny_faces(tmp_path: Path):
    # The demo warm-up is 300 batches; here it ends at half the budget so that the adversarial
    # game runs too.
    args = [
        "--config",
        str(REPO / "configs" / "demo" / "tinyface_gan.yaml"),
        *budget_args(BATCHES + BATCHES // 2, tmp_path, quiet=False),
        f"--model.init_args.pixel_warmup_steps={BATCHES // 2}",
        f"--data.init_args.synth_train_size={TRAIN_SCENES}",
        f"--data.init_args.synth_val_size={VAL_SCENES}",
        "--data.init_args.synth_scene_size=128",
    ]
    cli = main(args, run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert int(cli.model.batches_seen) == BATCHES
    bicubic, g2, n = face_psnr(cli.model, cli.datamodule.val_dataloader())
    print(f"tinyface: held-out faces n={n}: PSNR bicubic {bicubic:.2f} dB, G2 {g2:.2f} dB")
    assert n >= 40
    assert g2 >= bicubic + MARGIN_DB, (bicubic, g2)

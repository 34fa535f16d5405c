"""Run by tests/train/test_zero.py on two processes: ZeRO-3 steps where the ranks' batches differ in
kind (rank 0: two videos; rank 1: a video and an image), every parameter sharded. Each rank writes its
losses to ``<output_dir>/rank<r>.json``.

Arguments: the model config JSON and the output directory.
"""

import json
import math
import os
import sys
from pathlib import Path

import deepspeed
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest's sample makers

from conftest import make_samples, tiny_processor_for  # noqa: E402
from zero_worker import skip_deepspeed_inference_op  # noqa: E402

from lavida.losses import LavidaLoss  # noqa: E402
from lavida.models.config import LavidaConfig  # noqa: E402
from lavida.models.lavida import build_lavida  # noqa: E402
from lavida.train.launcher import register_zero3_outside_parameters  # noqa: E402


def main(config_json: str, output_dir: str) -> None:
    torch.set_num_threads(1)
    skip_deepspeed_inference_op()
    deepspeed.init_distributed(dist_backend="gloo")
    rank = int(os.environ["RANK"])
    torch.manual_seed(0)
    model = build_lavida(LavidaConfig.from_dict(json.loads(Path(config_json).read_text(encoding="utf-8"))))
    register_zero3_outside_parameters(model)
    video, image = make_samples(0)
    samples = [video, make_samples(1)[0]] if rank == 0 else [video, image]
    batch = tiny_processor_for(model)(samples, train=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=trainable,
        optimizer=torch.optim.AdamW(trainable, lr=1e-4),
        config={
            "train_micro_batch_size_per_gpu": 2,
            "gradient_accumulation_steps": 1,
            # 0: every parameter sharded, as the 7B model's large ones are (tiny ones would stay whole)
            "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
        },
    )
    loss_fn = LavidaLoss()
    losses = []
    for _ in range(2):
        out = engine(batch)
        loss = loss_fn(
            lm_loss=out.lm_loss,
            mask_logits=out.mask_logits,
            iou_pred=out.iou_pred,
            object_logits=out.object_logits,
            target_masks=batch.target_masks,
        )["loss"]
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    report = {"losses": losses, "finite": all(math.isfinite(v) for v in losses)}
    Path(output_dir, f"rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])

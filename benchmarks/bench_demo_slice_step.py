"""CPU seconds per slice-step of demo_ct and demo_mr with one thread, on 8 slices of the demo phantom (seed 0, abdomen).

    python benchmarks/bench_demo_slice_step.py

Process CPU time is used because it changes much less than wall time when other jobs share the CPU;
multiply by slices x steps for the single-thread sampling time of a whole demo (73 slices x 20 steps)."""
import time, sys
import numpy as np, SimpleITK as sitk, torch
torch.set_num_threads(1)
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from seg2med_core import api
from seg2med_core.io import Segmentation
from seg2med_core.phantoms.template import make_template_phantom
from seg2med_core.pipeline import convert_segmentation
seg = make_template_phantom(seed=0, region="abdomen")
img = seg.image
arr = sitk.GetArrayFromImage(img)
k0 = arr.shape[0] // 2
sub = img[:, :, k0:k0 + 8]
seg8 = Segmentation(image=sub, names=seg.names, label_set=seg.label_set)
out = {}
for name in ("demo_ct", "demo_mr"):
    s = seg8 if name == "demo_ct" else convert_segmentation(seg8, "total_mr")[0]
    model = api.load_model(name)
    api.synthesize(s, model, sampler=api.SamplerConfig(steps=2))  # warm-up
    c0, w0 = time.process_time(), time.perf_counter()
    api.synthesize(s, model)
    c, w = time.process_time() - c0, time.perf_counter() - w0
    out[name] = (c / (8 * 20), w / (8 * 20))
    print(name, f"CPU {c:.1f} s, wall {w:.1f} s for 8 slices x 20 steps: {c/160:.4f} CPU s per slice-step (wall {w/160:.4f})", flush=True)

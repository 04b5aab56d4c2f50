"""ONNX export of a student, checked against PyTorch with onnxruntime, with the ONNX model's CPU latency."""

import copy
import statistics
import time
from pathlib import Path

import torch
from torch import nn

PROTOBUF_LIMIT_BYTES = 2**31 - 2**24  # a margin under 2 GiB for the graph itself


def export_onnx(model: nn.Module, example_inputs: tuple, path: str | Path, *, repeats: int = 20) -> dict:
    """Export `model` to ONNX at `path` (batch dimension dynamic), run it with onnxruntime on the CPU and compare.

    The file is self-contained unless the weights exceed protobuf's 2 GiB limit; then they go to `path`.data
    beside it (keep both together). Returns: path, files (the files written), input_shapes (the example inputs'
    shapes: only the batch dimension may differ in use), max_abs_diff against the PyTorch model on
    `example_inputs`, onnx_cpu_latency_ms (median of `repeats` runs at the example batch), opset.
    Uses torch's torch.export-based exporter; needs the `export` extra (onnx, onnxscript, onnxruntime).
    """
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'gankd[export]'") from error
    path = Path(path)
    blocking = [folder for folder in path.parents if folder.exists() and not folder.is_dir()]
    if blocking:
        raise NotADirectoryError(f"the ONNX file {path} cannot be written: {blocking[0]} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).eval().cpu()  # the caller's model keeps its device and mode
    example_inputs = tuple(x.cpu() for x in example_inputs)
    names = [f"input_{i}" for i in range(len(example_inputs))]
    opset = 18
    batch_dynamic = tuple({0: torch.export.Dim.DYNAMIC} for _ in example_inputs)
    # One self-contained file while the weights fit protobuf's 2 GiB limit; beyond it they go to OUT.data beside it.
    weight_bytes = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
    external = weight_bytes > PROTOBUF_LIMIT_BYTES
    torch.onnx.export(model, example_inputs, str(path), input_names=names, output_names=["output"],
                      dynamic_shapes=batch_dynamic, opset_version=opset, dynamo=True, verbose=False,
                      external_data=external)  # fmt: skip
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: x.numpy() for name, x in zip(names, example_inputs, strict=True)}
    with torch.no_grad():
        expected = model(*example_inputs)
    produced = torch.from_numpy(session.run(None, feed)[0])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    files = [str(path)] + ([f"{path}.data"] if external else [])
    shapes = [list(x.shape) for x in example_inputs]
    return dict(path=str(path), files=files, input_shapes=shapes, max_abs_diff=(produced - expected).abs().max().item(),
                onnx_cpu_latency_ms=statistics.median(times), opset=opset)  # fmt: skip

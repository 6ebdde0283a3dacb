"""Checks that the encoder's LSTMs take Keras' fused cuDNN kernel, and what TensorFlow sees of the GPUs."""

from __future__ import annotations

import ctypes
import json
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Keras (TensorFlow backend) runs an LSTM as one CudnnRNNV3 op only with these settings
# (keras/src/backend/tensorflow/rnn.py, cudnn_ok; layers/rnn/lstm.py), with use_cudnn not
# False, with a mask (if any) right-padded, and only when TensorFlow lists a GPU at the time
# the layer is traced; otherwise it runs its own loop of per-step ops.
CUDNN_REQUIRED: dict[str, object] = {
    "activation": "tanh",
    "recurrent_activation": "sigmoid",
    "recurrent_dropout": 0.0,
    "unroll": False,
    "use_bias": True,
}
# The CUDA wheels of tensorflow[and-cuda] whose versions a proof reports.
CUDA_WHEELS = ("nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "nvidia-cublas-cu12")
# The shared libraries TensorFlow loads from those wheels, by soname, and their version calls.
_CUDNN_LIBRARY = "libcudnn.so.9"
_CUDART_LIBRARY = "libcudart.so.12"


def lstm_settings(model: Any) -> dict[str, Any]:
    """Whether every LSTM layer of a Keras model has settings that let Keras take the cuDNN
    kernel: per layer its settings and what keeps it off cuDNN, and the layers that give
    tensors a mask (a masked LSTM takes cuDNN only for right-padded sequences)."""
    masks = mask_sources(model)
    layers = [_lstm_layer(layer, masks) for layer in model.layers if type(layer).__name__ == "LSTM"]
    return {
        "eligible": bool(layers) and not any(layer["problems"] for layer in layers),
        "layers": layers,
        "mask_sources": masks,
    }


def _lstm_layer(layer: Any, masks: list[str]) -> dict[str, Any]:
    config = layer.get_config()
    problems = [
        f"{name} is {config.get(name)!r}, cuDNN needs {needed!r}"
        for name, needed in CUDNN_REQUIRED.items()
        if config.get(name) != needed
    ]
    use_cudnn = config.get("use_cudnn", "auto")
    if use_cudnn is False:
        problems.append("use_cudnn is False")
    if masks:
        problems.append(f"its input may be masked (by {', '.join(masks)}): cuDNN needs right padding")
    settings = {name: config.get(name) for name in CUDNN_REQUIRED}
    return {"layer": layer.name, **settings, "use_cudnn": use_cudnn, "problems": problems}


def mask_sources(model: Any) -> list[str]:
    """The layers that attach a mask to the tensors after them: Masking, and any layer with
    mask_zero (Embedding)."""
    return [
        layer.name
        for layer in model.layers
        if type(layer).__name__ == "Masking" or layer.get_config().get("mask_zero")
    ]


def cudnn_ops(concrete_function: Any) -> list[str]:
    """The cuDNN RNN ops (CudnnRNN, CudnnRNNV2, CudnnRNNV3) of a traced graph, those of its
    nested functions included: one per LSTM that runs on cuDNN."""
    graph = concrete_function.graph
    types = [op.type for op in graph.get_operations()]
    types += [node.op for function in graph.as_graph_def().library.function for node in function.node_def]
    return sorted(t for t in types if t.startswith("CudnnRNN"))


def tensorflow_facts() -> dict[str, Any]:
    """TensorFlow's version, the CUDA and cuDNN versions it was built with, the compute
    capabilities it carries kernels for, the GPUs it lists (name, compute capability) and the
    versions of the CUDA wheels installed beside it."""
    import keras
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capability = ".".join(map(str, details.get("compute_capability", ())))
        gpus.append(
            {"device": device.name, "name": details.get("device_name", ""), "compute_capability": capability}
        )
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cuda_build": build.get("cuda_version", ""),
        "cudnn_build": build.get("cudnn_version", ""),
        "cuda_capabilities_built": list(build.get("cuda_compute_capabilities", [])),
        "gpus": gpus,
        "cuda_wheels": {name: _installed(name) for name in CUDA_WHEELS},
    }


def _installed(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def loaded_cuda_versions() -> dict[str, int | None]:
    """The versions of the CUDA runtime and cuDNN libraries this process loaded (as their own
    version calls report them, such as 90300 for cuDNN 9.3.0); None for one not loaded or not
    readable. Meaningful after the encoder ran on a GPU: TensorFlow loads cuDNN on first use."""
    return {"cudart": _cudart_version(), "cudnn": _library_call(_CUDNN_LIBRARY, "cudnnGetVersion")}


def _library_call(soname: str, function: str) -> int | None:
    try:
        return int(getattr(ctypes.CDLL(soname, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL), function)())
    except (OSError, AttributeError):
        return None


def _cudart_version() -> int | None:
    try:
        runtime = ctypes.CDLL(_CUDART_LIBRARY, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
    except OSError:
        return None
    found = ctypes.c_int(0)
    return found.value if runtime.cudaRuntimeGetVersion(ctypes.byref(found)) == 0 else None


def main() -> None:
    """Prints tensorflow_facts() as JSON: run in a process of its own, so that the caller holds
    no GPU memory and the facts include the CUDA wheels installed just before."""
    print(json.dumps(tensorflow_facts()))


if __name__ == "__main__":
    main()

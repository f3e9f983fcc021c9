"""`engine.precision int8`: ONNX Runtime's dynamic quantisation of the cached float32 export (int8 weights, each
activation quantised at run time), cached beside it under its own key with the export's probe inputs and torch's
float32 outputs, against which it is checked at every load."""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from pathlib import Path

from hubserve.worker.backends.onnx_export import (
    META_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    cached_export,
    export_key,
    versions,
)
from hubserve.worker.backends.session import BackendUnavailable, Export

log = logging.getLogger("hubserve.worker")

# Bump when how an export is quantised changes: older quantisations are then not reused.
QUANTIZE_VERSION = 1
# What becomes int8: the linear layers (MatMul over a constant weight), fused attention, and the embedding tables
# (Gather). Weights with a scale per output channel (MiniLM's least token cosine to torch on the probes, tables left
# float32: 0.971 per channel, 0.896 per tensor); activations with one scale per tensor, found at run time. With the
# tables, MiniLM's int8 export is 23.5 MB instead of 59 MB, at the same accuracy (0.975) and speed.
QUANTIZED_OPS = ["MatMul", "Attention", "Gather"]


class _NoPreprocessingAdvice(logging.Filter):
    """Drops quantize_dynamic's advice (on the root logger, at every call) to pre-process the model first: on these
    exports its symbolic shape inference fails, and without that step it made no difference to MiniLM's int8
    outputs (their least cosine to torch's, 0.9713, and their relative error, 0.062, alike to the last digit)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing")


def quantized(export: Export, source: Path) -> Path:
    """The folder of the int8 quantisation of the model's float32 export in `source` (quantised now unless it is
    cached)."""
    if export.options.exports_dir is None:
        raise BackendUnavailable("no exports folder to keep the ONNX export in")
    exports_dir = Path(export.options.exports_dir)
    key = export_key(export, "onnx", "int8", exports_dir, quantize_version=QUANTIZE_VERSION,
                     quantizer=versions(("onnxruntime",)), source=source.name)
    return cached_export(exports_dir, key, lambda building: quantize_export(source, building))


def quantize_export(source: Path, folder: Path) -> None:
    """Quantise the float32 export in `source` into `folder` (QInt8 weights), with its probe inputs and outputs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.monotonic()
    advice = _NoPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        with warnings.catch_warnings():  # its libraries' deprecations: the probe check judges the result
            warnings.simplefilter("ignore")
            quantize_dynamic(source / MODEL_FILE, folder / MODEL_FILE, op_types_to_quantize=QUANTIZED_OPS,
                             per_channel=True, weight_type=QuantType.QInt8, use_external_data_format=True)
    finally:
        logging.getLogger().removeFilter(advice)
    shutil.copyfile(source / REFERENCE_FILE, folder / REFERENCE_FILE)
    meta = json.loads((source / META_FILE).read_text())
    meta.update(precision="int8", quantized_from=source.name, quantize_version=QUANTIZE_VERSION,
                seconds=round(time.monotonic() - started, 2))
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    log.info("quantised %s to int8 in %.1f s", source, meta["seconds"])

"""The live scorer: one model version in an ONNX Runtime session, P(bot) per row, per-slice decisions.

Build it from the registry (:meth:`Scorer.from_registry`, which verifies the checksum and the feature
spec) or from a manifest and bytes already in hand (the same checks run again: they are cheap next
to building a session).

Checks before the first real click (each failure is a :class:`~models.exceptions.ModelError` that
says what was expected and what was found, so a hot swap can refuse the model and keep the old one):

* the bytes' SHA-256 equals the manifest's (:class:`ModelIntegrityError`);
* the manifest's feature names/order/version equal the engine's spec (:class:`FeatureMismatch`);
* the graph has exactly one input, named as in the manifest, a float32 tensor [batch, F] with F the
  manifest's feature count (when the graph fixes it), and the named output (:class:`IncompatibleModel`);
* a dummy batch runs and yields one finite score per row, within [0, 1] for ``probabilities``.

Accepted outputs (manifest ``output_kind``):

* ``probabilities``: a [n, 2] tensor (column 1 is the bot class, as skl2onnx writes it with
  ``zipmap`` off), a [n] or [n, 1] tensor of P(bot), or a ZipMap (a sequence of {class: p} maps,
  skl2onnx's default; slower, since it goes through Python dicts);
* ``logit``: a [n] or [n, 1] raw logit (sigmoid applied), or [n, 2] class logits (softmax, column 1).

float64 outputs are cast to float32.

Providers: ``"auto"`` takes CUDA if ONNX Runtime lists it AND a session with it really has it live
(ORT falls back to CPU silently, with only a log line, when the CUDA libraries are missing) AND the
dummy batch runs on it; otherwise CPU. ``"cpu"`` is CPU only; ``"cuda"`` demands CUDA and raises
:class:`ProviderUnavailable` if it cannot run. :attr:`Scorer.provider` names the live one. The
result of the first CUDA probe is remembered for the process, so a hot swap does not pay it again.

Session: ``intra_op_threads`` (default 1: the worker is one asyncio thread and the box is small),
one inter-op thread, sequential execution, no spinning, all graph optimisations.

Decisions: a row is invalid when ``score >= threshold`` of its slice, else the manifest's default.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from app.features.spec import SPEC, FeatureSpec
from models.exceptions import IncompatibleModel, ModelIntegrityError, ProviderUnavailable
from models.registry import Manifest, Registry, sha256_hex

__all__ = ["Scorer", "CPU", "CUDA", "cuda_usable"]

log = logging.getLogger(__name__)

CPU: Final = "CPUExecutionProvider"
CUDA: Final = "CUDAExecutionProvider"
_DUMMY_ROWS: Final = 4
#: ONNX Runtime's default logger severity (warning); restored after a quiet CUDA probe.
_ORT_DEFAULT_SEVERITY: Final = 2

#: None until probed: can a CUDA session be created in this process?
_cuda_state: bool | None = None


def cuda_usable() -> bool | None:
    """What the process learnt about CUDA so far: True/False once probed, None before."""
    return _cuda_state


class Scorer:
    """Scores float32 [n, F] feature batches with one model version (see the module doc)."""

    def __init__(
        self,
        manifest: Manifest,
        onnx_bytes: bytes,
        providers: str | Sequence[str] = "auto",
        *,
        intra_op_threads: int = 1,
        spec: FeatureSpec = SPEC,
    ) -> None:
        actual = sha256_hex(onnx_bytes)
        if actual != manifest.onnx_sha256:
            raise ModelIntegrityError(
                f"model {manifest.version!r}: ONNX bytes sha256 is {actual}, manifest expects {manifest.onnx_sha256}"
            )
        manifest.check_features(spec)
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        self.manifest = manifest
        self.intra_op_threads = intra_op_threads
        self._n = manifest.n_features
        self._input = manifest.input_name
        self._output = manifest.output_name
        self._logit = manifest.output_kind == "logit"
        prep = manifest.preprocessing
        if prep.get("applied_in") == "scorer":
            self._mean: np.ndarray | None = np.asarray(prep["mean"], dtype=np.float32)
            self._inv_scale: np.ndarray | None = (1.0 / np.asarray(prep["scale"], dtype=np.float64)).astype(
                np.float32
            )
        else:
            self._mean = self._inv_scale = None
        self._thresholds = dict(manifest.thresholds)
        self._default = manifest.default_threshold
        self._session, self._zipmap = self._build(onnx_bytes, providers)
        self.provider: str = self._session.get_providers()[0]
        log.info(
            "model %s scoring on %s (intra-op threads %d, output %s/%s)",
            manifest.version,
            self.provider,
            intra_op_threads,
            self._output,
            manifest.output_kind,
        )

    @classmethod
    def from_registry(
        cls,
        registry: Registry,
        version: str,
        providers: str | Sequence[str] = "auto",
        *,
        intra_op_threads: int = 1,
    ) -> Scorer:
        manifest, data = registry.load(version)
        return cls(manifest, data, providers, intra_op_threads=intra_op_threads, spec=registry.spec)

    def __repr__(self) -> str:
        return f"Scorer({self.version!r}, provider={self.provider!r})"

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def n_features(self) -> int:
        return self._n

    # --- session ----------------------------------------------------------------------------------

    def _options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.intra_op_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only; provider fallback is reported by us
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return so

    def _build(self, data: bytes, providers: str | Sequence[str]) -> tuple[ort.InferenceSession, bool]:
        global _cuda_state
        if isinstance(providers, str):
            mode = providers.lower()
            if mode not in ("auto", "cpu", "cuda"):
                raise ValueError(f"providers must be 'auto', 'cpu', 'cuda' or a list, got {providers!r}")
        else:
            wanted = list(providers)
            unknown = [p for p in wanted if p not in ort.get_available_providers()]
            if unknown:
                raise ProviderUnavailable(
                    f"providers {unknown} not in this onnxruntime build ({ort.get_available_providers()})"
                )
            session = self._session_with(data, wanted)
            zipmap = self._inspect(session)
            self._probe(session)
            return session, zipmap

        if mode in ("auto", "cuda") and _cuda_state is not False:
            reason = None
            if CUDA not in ort.get_available_providers():
                reason = "not in this onnxruntime build"
                _cuda_state = False
            else:
                session = self._probe_cuda_session(data, quiet=mode == "auto")
                if CUDA not in session.get_providers():
                    reason = "CUDA libraries or device missing; onnxruntime fell back to CPU"
                    _cuda_state = False
                else:
                    _cuda_state = True
                    zipmap = self._inspect(session)  # a bad graph is refused here, whatever the provider
                    try:
                        self._probe(session)
                        return session, zipmap
                    except IncompatibleModel as exc:  # a kernel that fails on CUDA only, or a bad graph
                        reason = f"the dummy batch failed on CUDA: {exc}"
            if mode == "cuda":
                raise ProviderUnavailable(f"model {self.manifest.version!r}: CUDA requested but {reason}")
            log.warning("model %s: CUDA not used (%s); scoring on CPU", self.manifest.version, reason)
        elif mode == "cuda":
            raise ProviderUnavailable(
                f"model {self.manifest.version!r}: CUDA requested but it failed earlier in this process"
            )
        session = self._session_with(data, [CPU])
        zipmap = self._inspect(session)
        self._probe(session)
        return session, zipmap

    def _probe_cuda_session(self, data: bytes, quiet: bool) -> ort.InferenceSession:
        """A [CUDA, CPU] session. With ``quiet``, ONNX Runtime's own error about missing CUDA libraries
        (red, on every start of a CPU-only machine) is kept off the console: our warning says the
        same in one line. Asking for CUDA explicitly keeps ORT's messages, which name what is missing."""
        if not quiet:
            return self._session_with(data, [CUDA, CPU])
        ort.set_default_logger_severity(4)  # fatal only
        try:
            return self._session_with(data, [CUDA, CPU])
        finally:
            ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)

    def _session_with(self, data: bytes, providers: list[str]) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(data, self._options(), providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise IncompatibleModel(
                f"model {self.manifest.version!r}: onnxruntime refused the graph: {type(exc).__name__}: "
                f"{str(exc)[:300]}"
            ) from None

    def _inspect(self, session: ort.InferenceSession) -> bool:
        """Check the session's input/output against the manifest; True if the output is a ZipMap."""
        v = self.manifest.version
        inputs = session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != self._input:
            raise IncompatibleModel(
                f"model {v!r}: graph inputs {[i.name for i in inputs]}, manifest expects exactly [{self._input!r}]"
            )
        inp = inputs[0]
        if inp.type != "tensor(float)" or len(inp.shape) != 2:
            raise IncompatibleModel(
                f"model {v!r}: input {inp.name!r} is {inp.type} {inp.shape}, expected tensor(float) [batch, {self._n}]"
            )
        if isinstance(inp.shape[1], int) and inp.shape[1] != self._n:
            raise IncompatibleModel(
                f"model {v!r}: input {inp.name!r} takes {inp.shape[1]} features, manifest lists {self._n} "
                f"(feature_names)"
            )
        outputs = {o.name: o for o in session.get_outputs()}
        if self._output not in outputs:
            raise IncompatibleModel(
                f"model {v!r}: output {self._output!r} not in the graph (outputs: {list(outputs)})"
            )
        out_type = outputs[self._output].type
        zipmap = out_type.startswith("seq(map(")
        if zipmap and self._logit:
            raise IncompatibleModel(
                f"model {v!r}: a ZipMap output ({out_type}) cannot be output_kind 'logit'"
            )
        if not zipmap and out_type not in ("tensor(float)", "tensor(double)"):
            raise IncompatibleModel(f"model {v!r}: output {self._output!r} is {out_type}, not a float tensor")

        self._zipmap = zipmap
        return zipmap

    def _probe(self, session: ort.InferenceSession) -> None:
        """Run a dummy batch: one finite score per row, in [0, 1] unless the output is a logit."""
        v = self.manifest.version
        dummy = np.zeros((_DUMMY_ROWS, self._n), dtype=np.float32)
        try:
            raw = session.run([self._output], {self._input: self._prepare(dummy)})[0]
        except Exception as exc:
            raise IncompatibleModel(
                f"model {v!r}: a [{_DUMMY_ROWS}, {self._n}] dummy batch failed: {type(exc).__name__}: "
                f"{str(exc)[:300]}"
            ) from None
        scores = self._to_scores(raw, _DUMMY_ROWS)
        if not np.all(np.isfinite(scores)):
            raise IncompatibleModel(f"model {v!r}: dummy batch gave non-finite scores {scores.tolist()}")
        if not self._logit and not np.all((scores >= 0) & (scores <= 1)):
            raise IncompatibleModel(
                f"model {v!r}: output_kind 'probabilities' but the dummy batch gave {scores.tolist()} "
                "(outside [0, 1]; is the output a logit?)"
            )

    # --- scoring ----------------------------------------------------------------------------------

    def _prepare(self, batch: np.ndarray) -> np.ndarray:
        if self._mean is not None:
            return (batch - self._mean) * self._inv_scale  # new array; the input is untouched
        return np.ascontiguousarray(batch)

    def _to_scores(self, raw: Any, n: int) -> np.ndarray:
        v = self.manifest.version
        if self._zipmap:
            try:
                out = np.fromiter((row[1] for row in raw), dtype=np.float32, count=len(raw))
            except (KeyError, TypeError):
                raise IncompatibleModel(f"model {v!r}: ZipMap rows have no class 1") from None
        else:
            arr = np.asarray(raw)
            if arr.ndim == 2 and arr.shape == (n, 2):
                if self._logit:
                    with np.errstate(over="ignore"):  # exp -> inf gives 0, as it should
                        out = 1.0 / (1.0 + np.exp(arr[:, 0].astype(np.float64) - arr[:, 1]))
                else:
                    out = arr[:, 1]
            elif arr.shape in ((n,), (n, 1)):
                out = arr.reshape(n)
                if self._logit:
                    with np.errstate(over="ignore"):
                        out = 1.0 / (1.0 + np.exp(-out.astype(np.float64)))
            else:
                raise IncompatibleModel(
                    f"model {v!r}: output {self._output!r} has shape {list(arr.shape)} for {n} rows; "
                    "expected [n, 2], [n, 1] or [n]"
                )
        if out.shape != (n,):
            raise IncompatibleModel(f"model {v!r}: got {out.shape[0]} scores for {n} rows")
        return np.ascontiguousarray(out, dtype=np.float32)

    def score(self, batch: np.ndarray) -> np.ndarray:
        """P(bot) per row: float32 [n] for a float32 [n, F] batch in the manifest's feature order.

        The input is never written to; the same input gives the same output. An empty batch gives an
        empty result without touching the session.
        """
        if not isinstance(batch, np.ndarray) or batch.ndim != 2 or batch.shape[1] != self._n:
            shape = list(batch.shape) if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ValueError(f"model {self.version!r} scores float32 [n, {self._n}] batches, got {shape}")
        if batch.dtype != np.float32:
            raise TypeError(f"model {self.version!r} scores float32 batches, got {batch.dtype}")
        n = batch.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.float32)
        raw = self._session.run([self._output], {self._input: self._prepare(batch)})[0]
        return self._to_scores(raw, n)

    # --- decisions --------------------------------------------------------------------------------

    def threshold_for(self, slice_: str) -> float:
        return self._thresholds.get(slice_, self._default)

    def decide(self, scores: np.ndarray, slices: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(invalid bool [n], thresholds float64 [n])``: invalid where score >= the slice's threshold.

        A slice without its own threshold (or one the manifest does not know) uses the default.
        """
        scores = np.asarray(scores)
        if scores.ndim != 1 or len(slices) != scores.shape[0]:
            raise ValueError(f"decide: {scores.shape} scores for {len(slices)} slices")
        th = self._thresholds
        default = self._default
        thresholds = np.fromiter((th.get(s, default) for s in slices), dtype=np.float64, count=len(slices))
        return scores >= thresholds, thresholds

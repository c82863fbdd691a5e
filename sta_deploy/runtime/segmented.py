"""ONNX Runtime for ``--window-attention kernel`` graphs: the graph cut at its KeptWindowAttention nodes.

ONNX Runtime can only host a native custom op through its C API, whose headers no Python wheel
ships, and its Python custom ops (onnxruntime-extensions) copy every output element by element
(~0.3 s for one 19 MB attention output).  So the graph is cut at the KeptWindowAttention nodes into
segments, each an ordinary ``InferenceSession`` with all of ONNX Runtime's optimisations, and the
kernel of ``plugins/kept_window_attention`` runs between them directly on ONNX Runtime's buffers
(IO binding and ``OrtValue.data_ptr``): nothing is copied at a cut.  Values the kernel needs that
depend on weights only (the bias + mask tensors, the window types, the unpruned stages' indices)
are computed once, when the session is made.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..plugin.names import PLUGIN_DOMAIN, is_window_attention_node


@dataclass
class _Segment:
    session: object
    inputs: list[str]
    outputs: list[str]


@dataclass
class _KernelStep:
    inputs: list[str]
    output: str
    scale: float
    node: object  # the KeptWindowAttention NodeProto (its name in profiles, its place in merged graphs)


@dataclass
class _Plan:
    steps: list = field(default_factory=list)
    constants: dict = field(default_factory=dict)  # name -> numpy array computed once
    last_use: dict = field(default_factory=dict)  # name -> index of the last step that reads it


class SegmentedSession:
    """The subset of ``onnxruntime.InferenceSession`` that sta_deploy uses (``run``, ``get_inputs``,
    ``get_outputs``, ``get_providers``) for a graph with KeptWindowAttention nodes."""

    def __init__(self, path, *, make_options, providers, threads: int | None):
        import onnx

        from ..plugin.window_attention import load_kernel_library

        load_kernel_library()  # fail now, in one line, if the kernel cannot be built or loaded
        self._threads = threads
        self._providers = providers
        self._make_options = make_options
        # ONNX Runtime's profiler, when the options ask for it: every segment profiles itself (a file
        # each) and the kernel's runs are timed here; end_profiling() merges them into one trace.
        self._profiling = False
        self._kernel_events: list[dict] = []
        self._optimized_paths: list[Path] = []  # each segment's saved optimised graph, in run order
        model = onnx.load(str(path))  # with external data, if any
        self._graph_inputs = [value.name for value in model.graph.input]
        self._graph_outputs = [value.name for value in model.graph.output]
        self._plan = self._build_plan(model)
        # Output buffers of every step, per input shape, reused from run to run: a segment's outputs
        # would otherwise be fresh allocations each run, and first-touch page faults on hundreds of
        # MB cost as much as the attention saves.
        self._buffers: dict[tuple, dict] = {}
        self._first = next(step for step in self._plan.steps if isinstance(step, _Segment)).session

    # ------------------------------------------------------------------ plan
    def _build_plan(self, model) -> _Plan:
        import onnx

        graph = model.graph
        initializers = {init.name: init for init in graph.initializer}
        types = _value_types(model)
        constant = set(initializers)
        for node in graph.node:  # values that depend on weights only
            if not is_window_attention_node(node) and all(name in constant for name in node.input if name):
                constant.update(node.output)

        # Cut the (topologically ordered) node list at every kernel node.
        items, current = [], []
        for node in graph.node:
            if is_window_attention_node(node):
                if current:
                    items.append(current)
                items.append(node)
                current = []
            else:
                current.append(node)
        if current:
            items.append(current)

        reads_after = [set(self._graph_outputs)]  # reads_after[i]: names read by items i.. and the graph outputs
        for item in reversed(items):
            nodes = [item] if not isinstance(item, list) else item
            reads_after.insert(0, reads_after[0] | {name for node in nodes for name in node.input if name})
        plan = _Plan()
        needed_constants = {name for name in self._graph_outputs if name in constant}
        for index, item in enumerate(items):
            if not isinstance(item, list):
                needed_constants.update(name for name in item.input if name in constant)
                continue
            produced = {name for node in item for name in node.output if name}
            read = [name for node in item for name in node.input if name]
            crossing_in = [name for name in dict.fromkeys(read) if name not in produced and name not in initializers]
            needed_constants.update(name for name in crossing_in if name in constant)
        plan.constants = self._evaluate_constants(model, needed_constants, types) if needed_constants else {}

        for index, item in enumerate(items):
            later = reads_after[index + 1]
            if not isinstance(item, list):
                scale = next(attr.f for attr in item.attribute if attr.name == "scale")
                plan.steps.append(_KernelStep(list(item.input), item.output[0], scale, item))
                continue
            produced = [name for node in item for name in node.output if name]
            read = [name for node in item for name in node.input if name]
            produced_set = set(produced)
            inputs = [name for name in dict.fromkeys(read) if name not in produced_set and name not in initializers]
            outputs = [name for name in produced if name in later and name not in constant]
            used_initializers = [initializers[name] for name in dict.fromkeys(read) if name in initializers]
            sub = onnx.helper.make_graph(
                item,
                f"segment{index}",
                [types[name] for name in inputs],
                [types[name] for name in outputs],
                initializer=used_initializers,
            )
            sub_model = onnx.helper.make_model(sub, opset_imports=[o for o in model.opset_import if o.domain != PLUGIN_DOMAIN], ir_version=model.ir_version)
            plan.steps.append(_Segment(self._session(sub_model, f"segment{index}"), inputs, outputs))
        for index, step in enumerate(plan.steps):
            for name in step.inputs:
                plan.last_use[name] = index
        return plan

    def _session(self, model, label: str | None = None):
        """A session for one piece of the graph; ``label`` names its profile and optimised-graph files
        (None: the one-off constants session, which is neither profiled nor saved)."""
        import onnxruntime as ort

        options = self._make_options()
        if label is None:
            options.enable_profiling = False
            options.optimized_model_filepath = ""
        else:
            if options.enable_profiling:
                self._profiling = True
                options.profile_file_prefix = f"{options.profile_file_prefix}_{label}"
            if options.optimized_model_filepath:
                saved = Path(options.optimized_model_filepath)
                self._optimized_paths.append(saved.with_name(f"{saved.stem}_{label}.onnx"))
                options.optimized_model_filepath = str(self._optimized_paths[-1])
                options.add_session_config_entry("session.optimized_model_external_initializers_file_name", f"{saved.stem}_{label}.weights")
        # Every segment has its own thread pool: its workers spin while it runs (no wake-up per op)
        # and stop when its run ends, so that they do not steal the cores from the next segment and
        # the kernel.  (Measured on swin_t r1 = 256, 2 threads, interleaved: 714 ms, against 757 ms
        # with spinning off and ~1.4x slower with spinning left on.)
        options.add_session_config_entry("session.force_spinning_stop", "1")
        return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=self._providers)

    def _evaluate_constants(self, model, names, types) -> dict:
        """Run the weights-only part of the graph once; returns the values in ``names``."""
        import onnx

        graph = model.graph
        initializers = {init.name: init for init in graph.initializer}
        wanted, nodes = set(names), []
        for node in reversed(graph.node):  # the nodes these values come from, in order
            if any(name in wanted for name in node.output):
                nodes.insert(0, node)
                wanted.update(name for name in node.input if name)
        direct = {name: onnx.numpy_helper.to_array(initializers[name]) for name in names if name in initializers}
        computed = [name for name in names if name not in initializers]
        if not computed:
            return direct
        sub = onnx.helper.make_graph(
            nodes, "constants", [], [types[name] for name in computed],
            initializer=[initializers[name] for name in wanted if name in initializers],
        )
        sub_model = onnx.helper.make_model(sub, opset_imports=[o for o in model.opset_import if o.domain != PLUGIN_DOMAIN], ir_version=model.ir_version)
        values = self._session(sub_model).run(computed, {})
        return {**direct, **{name: np.ascontiguousarray(value) for name, value in zip(computed, values)}}

    # ------------------------------------------------------------------ run
    def run(self, output_names, input_feed, run_options=None):
        import onnxruntime as ort

        from ..plugin.window_attention import kernel_forward

        plan = self._plan
        feed = {name: np.ascontiguousarray(array) for name, array in input_feed.items()}
        values = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in feed.items()}
        buffers = self._buffers.setdefault(tuple((name, array.shape, array.dtype.str) for name, array in sorted(feed.items())), {})
        keep = set(output_names or self._graph_outputs)
        for index, step in enumerate(plan.steps):
            if isinstance(step, _Segment):
                binding = step.session.io_binding()
                for name in step.inputs:
                    binding.bind_ortvalue_input(name, values[name] if name in values else self._constant(name))
                for name in step.outputs:
                    if name in buffers:
                        binding.bind_ortvalue_output(name, buffers[name])
                    else:
                        binding.bind_output(name, "cpu")
                step.session.run_with_iobinding(binding, run_options)
                outputs = dict(zip(step.outputs, binding.get_outputs()))
                buffers.update((name, value) for name, value in outputs.items() if name not in buffers)
                values.update(outputs)
            else:
                operands = [_buffer(values[name] if name in values else self._constant(name)) for name in step.inputs[:6]]
                window_type = plan.constants.get(step.inputs[6])
                if window_type is None:
                    window_type = values[step.inputs[6]].numpy()
                q_shape, kept = operands[0][1], operands[4][1][-1]
                out = buffers.get(step.output)
                if out is None:
                    out = buffers[step.output] = ort.OrtValue.ortvalue_from_shape_and_type([q_shape[0], q_shape[1], kept, q_shape[3]], np.float32)
                started = time.perf_counter()
                kernel_forward(operands, window_type, step.scale, _buffer(out), threads=self._threads)
                if self._profiling:
                    self._kernel_events.append({
                        "cat": "Node", "name": f"{step.node.name}_kernel_time", "ph": "X",
                        "ts": int(started * 1e6), "dur": int(round((time.perf_counter() - started) * 1e6)),
                        "args": {"op_name": step.node.op_type, "provider": "sta_deploy kernel"},
                    })
                values[step.output] = out
            for name in [name for name in values if plan.last_use.get(name, -1) <= index and name not in keep]:
                del values[name]  # free what no later step reads
        # copies: the buffers are overwritten by the next run
        return [np.array(values[name].numpy() if name in values else self._plan.constants[name], copy=True) for name in (output_names or self._graph_outputs)]

    def end_profiling(self) -> str:
        """Stop profiling; the path of one trace with every segment's events and the kernel's
        (``<node>_kernel_time`` events, as ONNX Runtime names its own), like ``InferenceSession``'s."""
        if not self._profiling:
            return ""
        events, first = [], None
        for step in self._plan.steps:
            if isinstance(step, _Segment):
                path = Path(step.session.end_profiling())
                first = first or path
                events.extend(json.loads(path.read_text()))
        events.extend(self._kernel_events)
        merged = first.with_name(f"segmented_{first.name}")
        merged.write_text(json.dumps(events))
        self._profiling = False
        return str(merged)

    def optimized_graph(self):
        """The graph as ONNX Runtime runs it: every segment's optimised graph (saved when the options
        set ``optimized_model_filepath``) with the kernel nodes between them, in run order."""
        import onnx

        if not self._optimized_paths:
            raise ValueError("set optimized_model_filepath in the session options to keep the optimised graph")
        graph, saved = onnx.GraphProto(), iter(self._optimized_paths)
        for step in self._plan.steps:
            if isinstance(step, _Segment):
                graph.node.extend(onnx.load(str(next(saved)), load_external_data=False).graph.node)
            else:
                graph.node.append(step.node)
        return graph

    def _constant(self, name):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(self._plan.constants[name])

    def get_inputs(self):
        return self._metadata("get_inputs", self._graph_inputs)

    def get_outputs(self):
        return self._metadata("get_outputs", self._graph_outputs)

    def _metadata(self, getter: str, names: list[str]):
        found = {meta.name: meta for step in self._plan.steps if isinstance(step, _Segment) for meta in getattr(step.session, getter)()}
        return [found[name] for name in names if name in found]

    def get_providers(self):
        return self._first.get_providers()


def _buffer(value):
    """(pointer, shape) of a CPU OrtValue or a numpy array (contiguous)."""
    if isinstance(value, np.ndarray):
        return value.ctypes.data, value.shape
    return value.data_ptr(), tuple(value.shape())


def _value_types(model) -> dict:
    """Name -> ValueInfoProto (element type and shape) of every value, kernel outputs included."""
    import onnx

    from ..plugin.window_attention_export import window_attention_schema

    window_attention_schema()  # so that inference knows the node (its output then has no type yet)
    infos = {}
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        infos[value.name] = value
    for init in graph.initializer:
        infos[init.name] = onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
    typed = onnx.ModelProto()  # the model without its weights: shape inference needs only their types
    typed.ir_version = model.ir_version
    typed.opset_import.extend(model.opset_import)
    typed.functions.extend(model.functions)
    for field_name in ("node", "input", "output", "value_info"):
        getattr(typed.graph, field_name).extend(getattr(graph, field_name))
    typed.graph.input.extend(infos[init.name] for init in graph.initializer if init.name not in {v.name for v in graph.input})
    for node in graph.node:
        if is_window_attention_node(node):
            typed.graph.value_info.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    inferred = onnx.shape_inference.infer_shapes(typed)
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        infos.setdefault(value.name, value)
    return infos

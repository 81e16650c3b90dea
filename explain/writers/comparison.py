"""compare/: library maps against hand-written references or a folder of reference maps."""

from __future__ import annotations

from explain import reference
from explain.compare import Comparison, check_references
from explain.config import Config
from explain.errors import ExplainError
from explain.images import ImageRef
from explain.writers import BatchContext, RunContext, Writer


class CompareWriter(Writer):
    """Per map: metrics and a library / reference / difference figure; at the end compare.csv
    (in config order, so a resumed run writes the same bytes) and a verdict per method."""

    def state(self) -> dict:
        if not hasattr(self, "comparison"):
            return {}
        return {"missing": list(self.comparison.missing),
                "expected": set(self.comparison.expected)}

    def merge(self, state: dict) -> None:
        if state:
            self.comparison.missing += state["missing"]
            self.comparison.expected |= state["expected"]

    def prepare(self, cfg: Config, refs: list[ImageRef]) -> None:
        """Before the folder is claimed: the references can be made (one target layer) or
        every reference file for an image of the run is a readable 2-D map."""
        ref_dir = cfg.resolve(cfg.compare.reference_dir) if cfg.compare.reference_dir else None
        if ref_dir is None:
            if len(cfg.target_layers) > 1:
                raise ExplainError("compare: hand-written references cover one target layer; "
                                   "list one in target_layers or set compare.reference_dir")
            return
        if not ref_dir.is_dir():
            raise ExplainError(f"compare.reference_dir: folder not found: {ref_dir}")
        check_references(ref_dir, [r.id for r in refs], list(cfg.classes),
                         [m.name for m in cfg.methods])

    def start(self, ctx: RunContext) -> None:
        cfg = ctx.cfg
        ref_dir = cfg.resolve(cfg.compare.reference_dir) if cfg.compare.reference_dir else None
        if ref_dir is None:
            if len(cfg.target_layers) > 1:
                raise ExplainError("compare: hand-written references cover one target layer; "
                                   "list one in target_layers or set compare.reference_dir")
            skipped = [m for m in ctx.methods if m not in reference.METHODS]
            if skipped:
                ctx.summary.notes.append(f"compare: no hand-written reference for "
                                         f"{', '.join(skipped)}")
        self.comparison = Comparison(ctx.run, cfg.compare.tolerance, ref_dir)

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        result, x = batch.result, batch.x
        size = (x.shape[-2], x.shape[-1])
        keep = {view.row: {s for s, _ in result.slots(view.row)} for view in batch.images}
        for s in range(result.classes.shape[1]):
            views = [view for view in batch.images if s in keep[view.row]]
            if not views:  # every image explains this slot's class at an earlier slot
                continue
            classes = [int(c) for c in result.classes[:, s]]
            handwritten = {}
            wanted = [m for m in result.maps if m in reference.METHODS]
            if self.comparison.reference_dir is None and wanted:
                acts, grads = reference.capture(ctx.model, ctx.layers[0], x, classes,
                                                layout=ctx.layouts[0], head=ctx.head)
                handwritten = {m: reference.reference_cam(m, acts, grads, size) for m in wanted}
            for view in views:  # a class is compared once per image
                b, cls = view.row, ctx.classes[classes[view.row]]
                for method, maps in result.maps.items():
                    ref = self.comparison.reference_for(view.entry.id, cls, method, size,
                                                        {m: v[b] for m, v in handwritten.items()})
                    if ref is not None:
                        row = self.comparison.add(view.entry.id, cls, method, maps[b, s], ref)
                        ctx.compare_rows.setdefault(view.entry.id, []).append(row)

    def finish(self, ctx: RunContext) -> None:
        rank = {name: i for i, name in enumerate(ctx.image_order)}
        class_rank = {name: i for i, name in enumerate(ctx.cfg.classes)}
        method_rank = {name: i for i, name in enumerate(ctx.methods)}
        rows = sorted((r for rows in ctx.compare_rows.values() for r in rows),
                      key=lambda r: (rank.get(r.image, len(rank)), class_rank[r.class_name],
                                     method_rank[r.method]))
        ctx.summary.compare = self.comparison.finish(rows)

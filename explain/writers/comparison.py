"""compare/: library maps against hand-written references or a folder of reference maps."""

from __future__ import annotations

from explain import reference
from explain.compare import CSV_PATH, Comparison, figure_path
from explain.referencefiles import check_references
from explain.errors import ExplainError
from explain.methods import having, traits
from explain.plan import RunPlan
from explain.batches import BatchContext
from explain.writers import RunContext, Writer


class CompareWriter(Writer):
    """Per map: metrics and a library / reference / difference figure; at the end compare.csv
    (in config order, so a resumed run writes the same bytes) and a verdict per method."""

    def state(self) -> dict:
        if not hasattr(self, "comparison"):
            return {}
        return {"missing": list(self.comparison.missing),
                "expected": set(self.comparison.expected)}  # (resized, crossed: the rows')

    def merge(self, state: dict) -> None:
        if state:
            self.comparison.missing += state["missing"]
            self.comparison.expected |= state["expected"]

    def prepare(self, plan: RunPlan) -> None:
        """Before the folder is claimed: the references can be made (one target layer) or
        every reference file for an image of the run is a readable 2-D map."""
        cfg = plan.cfg
        ref_dir = cfg.resolve(cfg.compare.reference_dir) if cfg.compare.reference_dir else None
        if ref_dir is None:
            if len(cfg.target_layers) > 1:
                raise ExplainError("compare: hand-written references cover one target layer; "
                                   "list one in target_layers or set compare.reference_dir")
            return
        if not ref_dir.is_dir():
            from explain.images.finding import relative_hint
            raise ExplainError(f"compare.reference_dir: folder not found: {ref_dir}"
                               f"{relative_hint(cfg.compare.reference_dir, folder=True)}")
        check_references(ref_dir, [r.id for r in plan.images], list(cfg.classes), plan.methods)

    def start(self, ctx: RunContext) -> None:
        cfg = ctx.cfg
        ref_dir = cfg.resolve(cfg.compare.reference_dir) if cfg.compare.reference_dir else None
        if ref_dir is None:  # one target layer (checked by prepare)
            skipped = [m for m in ctx.methods if not traits(m).reference]
            if skipped:
                ctx.summary.notes.append(f"compare: no hand-written reference for "
                                         f"{', '.join(skipped)}")
        self.comparison = Comparison(ctx.run, cfg.compare.tolerance, ref_dir,
                                     paper_notes=cfg.model.fix_inplace)
        self.comparison.classes = ", ".join(f"{k} = {v}" for k, v in cfg.classes.items())

    def write(self, ctx: RunContext, batch: BatchContext) -> None:
        plan, result, x = ctx.plan, batch.result, batch.x
        size = (x.shape[-2], x.shape[-1])
        pairs: dict[tuple[str, str], dict] = {}  # (image, method) -> class -> (library, ref)
        for s in range(result.classes.shape[1]):
            here = [(view, one) for view in batch.images for one in view.maps if one.slot == s]
            if not here:  # every image explains this slot's class at an earlier slot
                continue
            handwritten = {}
            wanted = having("reference", list(result.maps))
            if self.comparison.reference_dir is None and wanted:
                layer = plan.target_layers[0]
                acts, grads = reference.capture(plan.model, layer.module, x,
                                                [int(c) for c in result.classes[:, s]],
                                                layout=layer.layout, head=plan.head)
                handwritten = {m: reference.reference_cam(m, acts, grads, size) for m in wanted}
            for view, one in here:  # a class is compared once per image
                ref = self.comparison.reference_for(
                    view.entry.id, one.class_name, one.method, size,
                    {m: v[one.row] for m, v in handwritten.items()})
                if ref is not None:
                    pairs.setdefault((view.entry.id, one.method), {})[one.class_name] = \
                        (one.cam, ref)
                    row = self.comparison.add(view.entry.id, one.class_name, one.method,
                                              one.cam, ref)
                    ctx.compare_rows.setdefault(view.entry.id, []).append(row)
                    one.record.files.compare = figure_path(view.entry.id, one.class_name,
                                                           one.method)
        if self.comparison.reference_dir is not None:  # the user's maps: classes swapped?
            for (image, method), found in pairs.items():
                self.comparison.cross_check(image, method, found)

    def finish(self, ctx: RunContext) -> None:
        rank = {name: i for i, name in enumerate(ctx.image_order)}
        class_rank = {name: i for i, name in enumerate(ctx.cfg.classes)}
        method_rank = {name: i for i, name in enumerate(ctx.methods)}

        def order(image: str, cls: str, method: str) -> tuple[int, int, int]:
            return rank.get(image, len(rank)), class_rank[cls], method_rank[method]
        rows = sorted((r for rows in ctx.compare_rows.values() for r in rows),
                      key=lambda r: order(r.image, r.class_name, r.method))
        maps = {(e.id, c.class_name, c.method) for e in ctx.summary.images for c in e.cams}
        self.comparison.cover(sorted(maps, key=lambda m: order(*m)), rows)  # kept images too
        ctx.summary.compare = self.comparison.finish(rows)
        ctx.summary.files.compare_csv = CSV_PATH

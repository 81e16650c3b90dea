"""Command line: ``explain CONFIG.yaml [overrides]``, ``explain report RUN_DIR``,
``explain layers CONFIG`` and ``explain diff RUN_A RUN_B``. User errors print as one line,
exit 2.

Every line printed to the terminal passes ``explain.names.printable``: names from files and
models (layers, images, dictionary keys) may hold escape codes or line breaks, which are shown
escaped, so no file can redraw the screen or forge a line such as ``explain: error: ...``."""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Optional

from explain import __version__
from explain.errors import DETAIL, ExplainError, RunInterrupted
from explain.names import printable

EXIT_USER_ERROR = 2


def say(line: object, stream=None) -> None:
    """Print one line to ``stream`` (default stderr) as the terminal may show it: escape codes,
    line breaks and bidi overrides escaped, length capped (explain.names.printable)."""
    print(printable(line), file=stream or sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="explain", description="Run a class-activation-map study described by a YAML file.",
        epilog="explain report RUN_DIR rebuilds a run's report.html from its results folder; "
               "explain layers CONFIG lists the model's layers and the one 'auto' picks; "
               "explain diff RUN_A RUN_B compares the maps of two runs.")
    p.add_argument("config", help="the experiment file (YAML)")
    p.add_argument("--methods", help="comma-separated methods (e.g. gradcam,layercam), replacing "
                                     "the config's methods")
    p.add_argument("--layer", help="one target layer (e.g. features.11), replacing the config's "
                                   "target_layers")
    p.add_argument("--out", help="results root folder, relative to the working directory")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config key, e.g. --set output.colormap=turbo (repeatable)")
    p.add_argument("--compare", action="store_true", help="also compare with reference CAMs")
    p.add_argument("--overwrite", action="store_true", help="replace results/<name> instead of "
                                                            "writing results/<name>-2")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted run in results/<name>, keeping its finished images")
    p.add_argument("--workers", type=int, metavar="N",
                   help="threads decoding and encoding beside the model (default: none on "
                        "2 cores or fewer, else cores - 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"explain {__version__}")
    return p


def overrides_from(args: argparse.Namespace) -> dict:
    """The command line's changes to the config, as dotted keys."""
    found = {}
    for flag, value in (("--methods", args.methods), ("--layer", args.layer), ("--out", args.out)):
        if value is not None and not value.strip():  # e.g. an unset shell variable
            raise ExplainError(f"{flag}: empty; give a value or leave the option out")
    if args.methods is not None:
        found["methods"] = args.methods  # "gradcam,layercam": the config splits it
    if args.layer is not None:
        found["target_layers"] = [args.layer.strip()]
    if args.device:
        found["device"] = args.device
    if args.compare:
        found["compare.enabled"] = True
    if args.workers is not None:
        found["workers"] = args.workers
    found.update(parse_sets(args.sets))
    return found


def parse_sets(items: list[str]) -> dict:
    """``--set KEY=VALUE`` options as config overrides (values read as YAML reads them)."""
    from explain.config import parse_value
    found = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ExplainError(f"--set {item}: expected KEY=VALUE, e.g. output.colormap=turbo")
        found[key.strip()] = parse_value(value)
    return found


def _print_error(exc: BaseException) -> int:
    """A user error as one line on stderr (an OSError names its file), or one line and its
    indented detail lines; every line escaped (printable). Returns the exit code."""
    if isinstance(exc, OSError):
        from explain.names import short
        where = f"{short(exc.filename)}: " if exc.filename else ""
        exc = f"{where}{exc.strerror or exc}"
    if isinstance(exc, ExplainError):
        first, *details = exc.lines()
    else:
        first, details = str(exc), []
    say(f"explain: error: {first}")
    for detail in details:  # each problem of a config with several, indented
        say(DETAIL[1:] + detail)
    return EXIT_USER_ERROR


def report_main(argv: list[str]) -> int:
    """``explain report RUN_DIR``: rebuild report.html from a results folder, no model needed."""
    p = argparse.ArgumentParser(prog="explain report",
                                description="Rebuild report.html of a finished (or interrupted) "
                                            "run from its results folder, without the model.")
    p.add_argument("run_dir", type=Path, help="the run's results folder, e.g. results/demo_catdog")
    p.add_argument("--photo-separator", metavar="SEP",
                   help="work out 'Which map to trust' again with images whose ids agree up "
                        "to SEP as one photo (cat01, cat01-flip: '-'), as report."
                        "photo_separator does at run time; summary.json is left as it is")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    try:
        from explain.writers.report import rebuild
        page = rebuild(args.run_dir, args.photo_separator)
    except (ExplainError, OSError) as exc:
        if args.debug:
            raise
        return _print_error(exc)
    say(f"explain: report -> {page}")
    return 0


def layers_main(argv: list[str]) -> int:
    """``explain layers CONFIG``: the model's layers, their output shapes, which a CAM can use
    and the one ``target_layers: auto`` picks, from one forward and backward pass on the first
    image. Nothing is written."""
    p = argparse.ArgumentParser(prog="explain layers",
                                description="List the model's layers, their output shapes on the "
                                            "config's first image, which ones a CAM can use and "
                                            "the one 'target_layers: auto' picks.")
    p.add_argument("config", help="the experiment file (YAML)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config key, e.g. --set preprocess.size=224 (repeatable)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    try:
        from explain.config import load_config
        cfg = load_config(args.config, parse_sets(args.sets),
                          defaults={"target_layers": "auto", "methods": ["gradcam"]})
        from explain.plan import naming_the_file
        with naming_the_file(cfg):  # 'model: ...' lines name the config, as a run's do
            x, first, rows, table = _layers_table(cfg)
    except (ExplainError, OSError) as exc:
        if args.debug:
            raise
        return _print_error(exc)
    grey = ", given to the network as 1 grey channel" if cfg.model.in_channels == 1 else ""
    say(f"{cfg.source.name}: {len(rows)} modules, input {tuple(x.shape)} "
        f"({first.ref.path.name}{grey})", sys.stdout)
    print(table)  # each cell passed printable in format_table
    return 0


def _layers_table(cfg: Any) -> tuple[Any, Any, list, str]:
    """``explain layers``' work: the first image's tensor, the image, the rows and the table."""
    from explain.images import find_images
    from explain.layers import format_table, survey
    from explain.models.heads import Classifier, Head
    from explain.models.loading import load_model
    from explain.images.checking import first_image
    from explain.plan import bounded_forward, reshape_mode
    from explain.tasks import task_for
    net = load_model(cfg)
    refs, _ = find_images(cfg)
    first, _ = first_image(cfg, refs)
    x = first.tensor[None]
    task = task_for(cfg)  # segmentation / detection: the task's wrapper, score and auto
    model, head = task.wrap(net) if task else \
        (Classifier.of(net, cfg), Head(cfg.model.head, cfg.model.target))
    bounded_forward(cfg, model, first)
    rows = survey(net, model, x, head, mode=reshape_mode(cfg, net))
    table = format_table(rows, (lambda found: task.auto_layer(net, model, x, found))
                         if task else None)
    return x, first, rows, table


def diff_main(argv: list[str]) -> int:
    """``explain diff RUN_A RUN_B [--threshold R]``: compare the maps of two runs of the same
    images, without the model. Exit 1 when a map's correlation is below R, else 0."""
    p = argparse.ArgumentParser(prog="explain diff",
                                description="Compare two runs of the same images (two checkpoints "
                                            "or two configs) map by map, from their results "
                                            "folders, without the model.")
    p.add_argument("run_a", type=Path, help="the first run's results folder (the baseline)")
    p.add_argument("run_b", type=Path, help="the second run's results folder")
    p.add_argument("--threshold", metavar="R",
                   help="exit 1 when any map's correlation with its counterpart is below R "
                        "(-1 to 1): a regression gate")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="folder to write diff-<A>-<B>/ in (default: RUN_B's parent folder)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    try:
        from explain.diff import diff_runs, parse_threshold
        result = diff_runs(args.run_a, args.run_b, parse_threshold(args.threshold), args.out)
    except (ExplainError, OSError) as exc:
        if args.debug:
            raise
        return _print_error(exc)
    for line in result.lines:
        say(line, sys.stdout)
    return 1 if result.below else 0


def _show_warning(message, category, *where) -> None:
    """warnings.showwarning for the command line: the message passes printable; ``where`` is
    the rest of showwarning's arguments (filename, lineno, file, line), passed on."""
    _SHOW_WARNING[0](printable(message), category, *where)


def _show_uncaught(kind, exc, tb) -> None:
    """sys.excepthook for the command line: a traceback (a bug, or --debug) whose lines pass
    printable; an exception message of several lines gets its later lines indented, so no
    text in it can pass for a line of explain's own."""
    import traceback
    shown = traceback.TracebackException(kind, exc, tb)
    messages, todo = set(), [shown]
    while todo:
        one = todo.pop()
        messages.update(one.format_exception_only())
        todo += [e for e in (one.__cause__, one.__context__) if e is not None]
    for chunk in shown.format():
        lines = (chunk[:-1] if chunk.endswith("\n") else chunk).split("\n")
        if chunk in messages:
            lines = lines[:1] + ["    " + line for line in lines[1:]]
        sys.stderr.write("".join(printable(line, 10 ** 5) + "\n" for line in lines))


_SHOW_WARNING = [None]


def _guard_terminal() -> None:
    """When explain runs as a program: warnings and uncaught tracebacks (which quote texts
    from files too) pass printable like every other line."""
    import warnings
    if _SHOW_WARNING[0] is None:
        _SHOW_WARNING[0] = warnings.showwarning
        warnings.showwarning = _show_warning
    sys.excepthook = _show_uncaught


_TERMINATED: list[int] = []  # SIGTERM arrived: the run stopped as Ctrl-C stops it


def stop_on_terminate() -> None:
    """When explain runs as a program: SIGTERM (kill, a job scheduler's stop) ends a run as
    Ctrl-C does, with its line saying what the run folder holds and how to go on (it ended
    the run without a word), and exit code 143."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        _TERMINATED.append(signum)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)


def _interrupted_code() -> int:
    """The exit code of a command that stopped on KeyboardInterrupt: 143 after SIGTERM, 130
    after Ctrl-C (the shell's codes of the two signals)."""
    return 143 if _TERMINATED else 130


def _other_rank() -> bool:
    """A rank other than 0 of several that torchrun started (its environment says so)."""
    return os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1") and \
        os.environ.get("RANK", "0").strip() not in ("", "0")


COMMANDS = {"layers": layers_main, "report": report_main, "diff": diff_main}  # explain WORD


def _command_typo(argv: list[str]) -> Optional[str]:
    """'explain layer x.yaml': a first word that is no file but close to a command (argparse
    took it for the config and said "unrecognized arguments: x.yaml")."""
    word = argv[0] if argv else ""
    if not word or word.startswith("-") or any(c in word for c in "./\\") or \
            Path(word).exists() or len(argv) < 2:  # a path is a config that is not there
        return None
    close = difflib.get_close_matches(word, list(COMMANDS), n=1, cutoff=0.75)
    if not close:
        return None
    rest = " ".join(shlex.quote(a) for a in argv[1:])
    return f"no command or config file '{word}': did you mean 'explain {close[0]} {rest}'?"


def main(argv: Optional[list[str]] = None) -> int:
    if argv is None:  # the program, not a test calling main([...])
        _guard_terminal()
        stop_on_terminate()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = COMMANDS.get(argv[0]) if argv else None
    if command is not None and not Path(argv[0]).is_file():  # not a config named 'report'
        try:
            return command(argv[1:])
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: a line, not a traceback
            say(f"explain {argv[0]}: interrupted")
            return _interrupted_code()
    typo = _command_typo(argv)
    if typo:
        return _print_error(ExplainError(typo))
    args = build_parser().parse_args(argv)
    overrides: dict = {}
    try:
        if args.resume and args.overwrite:
            raise ExplainError("--resume and --overwrite exclude each other: --resume completes "
                               "an interrupted run, --overwrite replaces it")
        from explain.config import load_config
        overrides = overrides_from(args)
        cfg = load_config(args.config, overrides)  # before torch is imported
        from explain.runner import RunOptions, run
        run(cfg, RunOptions(out_root=Path(args.out).resolve() if args.out else None,
                            overwrite=args.overwrite, resume=args.resume,
                            progress=not args.quiet, log=say))
    except (ExplainError, OSError) as exc:  # OSError: disk full, read-only folder, ...
        if args.debug:
            raise
        if isinstance(exc, ExplainError):
            from explain.config import attribute
            attribute(exc, args.config, overrides, "the command line")
        return _print_error(exc)
    except KeyboardInterrupt as exc:  # RunInterrupted says what the run folder holds
        if not _other_rank():  # torchrun stops every rank: rank 0 says it once
            say(str(exc) if isinstance(exc, RunInterrupted) else  # it names the run's folder
                "explain: interrupted before the run started; nothing was written")
        return _interrupted_code()
    return 0

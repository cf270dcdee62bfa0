"""The ``convkit report`` verb (registered by ``cli.main``): one self-contained HTML page per run."""

from __future__ import annotations

import argparse

from convkit.cli.common import FORMATTER, CLIError, nonnegative_int, reported_warnings

EXAMPLES = {
    "report": """examples:
  convkit report runs/fastcnn-20250101-120000            writes runs/fastcnn-20250101-120000/report.html
  convkit report runs/fastcnn-20250101-120000 --open     ... and opens it in the browser
  convkit report runs/resnet20-20250101-120000 --gradcams 12 --out resnet20.html
  convkit report runs/fastcnn-20250101-120000 --data fashion-mnist --data-dir ~/data    other test images""",
}


def cmd_report(args: argparse.Namespace) -> int:
    from convkit.report import build_report

    if args.gradcams < 0:
        raise CLIError(f"--gradcams must be 0 or more, got {args.gradcams}")
    with reported_warnings(RuntimeWarning):  # sections left out of the page (the page says so too)
        path = build_report(args.run_dir, args.out, test_data=args.data, gradcams=args.gradcams,
                            data_dir=args.data_dir)
    print(path)
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return 0


def register(verbs, formatter_class=FORMATTER) -> None:
    """Adds the ``report`` subparser to ``verbs`` (from add_subparsers).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> register(parser.add_subparsers(dest="verb"))
        >>> args = parser.parse_args(["report", "runs/x", "--gradcams", "2"])
        >>> args.run_dir, args.gradcams, args.run.__name__
        ('runs/x', 2, 'cmd_report')
    """
    p = verbs.add_parser("report", help="one self-contained HTML page about a training run",
                         description="Write one self-contained HTML page about a run: key metrics, curves, "
                         "confusion matrix, per-epoch metrics, the layer table, first-layer filters, Grad-CAMs of "
                         "test images (correct and wrong) and the config. Images are embedded, nothing is "
                         "loaded from elsewhere: the file can be mailed or attached as it is.",
                         epilog=EXAMPLES["report"], formatter_class=formatter_class)
    # dest run_dir: `run` is the namespace slot of the verb's function (see cli.main)
    p.add_argument("run_dir", metavar="RUN", help="a run folder of `convkit train`")
    p.add_argument("--out", metavar="FILE.html", help="where to write the page (default: RUN/report.html)")
    p.add_argument("--gradcams", type=nonnegative_int, default=6, metavar="N",
                   help="test images to explain with Grad-CAM, half correct, half wrong (default: 6; 0: none)")
    p.add_argument("--data", help="test images for the Grad-CAMs (default: the run's test set)")
    p.add_argument("--data-dir", help="where named datasets are looked for (default: the run's)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(run=cmd_report)

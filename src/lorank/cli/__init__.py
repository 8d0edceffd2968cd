"""The ``lorank`` command line: a thin typer layer, one module per verb group; every verb calls a public Python
function (named in each module's docstring).

| module | verbs |
|---|---|
| :mod:`lorank.cli.evaluate` | ``evaluate``, ``retrieve`` |
| :mod:`lorank.cli.models` | ``models`` |
| :mod:`lorank.cli.train` | ``train``, ``teacher``, ``mine``, ``export-adapter``, ``snapshot`` |
| :mod:`lorank.cli.rerank` | ``rerank`` |
| :mod:`lorank.cli.ablate` | ``ablate`` |
| :mod:`lorank.cli.study` | ``study``, ``report``, ``study-time``, ``findings``, ``families``, ``demo`` |
| :mod:`lorank.cli.ltr` | ``features``, ``ltr`` |
| :mod:`lorank.cli.analyze` | ``analyze weights / compare / probe / patch``, ``analyze compare-views adalora / dylora / icr`` |
"""
from __future__ import annotations

import sys

import typer

from lorank.allocator import reexec_with_allocator
from lorank.cli import ablate, evaluate, ltr, models, rerank, study, train
from lorank.cli.analyze import analyze_app
from lorank.cli.common import console, err_console, fail, guard  # noqa: F401  (re-exported)
from lorank.errors import LorankError

app = typer.Typer(help="Train, evaluate and dissect LoRA-fine-tuned LLM rerankers.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

# in the order `lorank --help` lists them
for _name, _fn in (("evaluate", evaluate.evaluate_cmd), ("retrieve", evaluate.retrieve_cmd),
                   ("models", models.models_cmd), ("train", train.train_cmd), ("rerank", rerank.rerank_cmd),
                   ("teacher", train.teacher_cmd), ("mine", train.mine_cmd),
                   ("export-adapter", train.export_adapter_cmd),
                   ("evaluate-adapter", train.evaluate_adapter_cmd), ("readme", train.readme_cmd),
                   ("snapshot", train.snapshot_cmd), ("ablate", ablate.ablate_cmd),
                   ("study", study.study_cmd), ("report", study.report_cmd), ("study-time", study.study_time_cmd),
                   ("findings", study.findings_cmd),
                   ("families", study.families_cmd),
                   ("demo", study.demo_cmd), ("features", ltr.features_cmd), ("ltr", ltr.ltr_cmd)):
    app.command(_name)(_fn)
app.add_typer(analyze_app, name="analyze")


def main() -> None:  # pragma: no cover - entry point
    try:
        reexec_with_allocator()  # the verbs that train run on tcmalloc where installed (lorank.allocator)
        app()
    except LorankError as e:
        fail(e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

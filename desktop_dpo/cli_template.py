"""``desktop-dpo template MODEL``: see or choose the chat template a model is used with, from a terminal.

The same choice the Models view's template editor stores (``core/llm/template_choice.py``): a known template
by name, a Jinja file of one's own (checked by rendering a sample conversation first), or the model's own.
Collect, Chat, training and the export use it from then on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from desktop_dpo.config import AppPaths
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.llm.template_choice import (
    KNOWN_TEMPLATES,
    TemplateChoice,
    check_template,
    marker_hint,
    set_template_choice,
    template_for,
    template_status,
)
from desktop_dpo.core.model_files import special_tokens


def add_template_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The ``template`` command's parser."""
    names = ", ".join(KNOWN_TEMPLATES)
    template = commands.add_parser(
        "template",
        parents=[common],
        help="show or choose the chat template a model is used with",
        description="Show the chat template a registered model is used with (and a sample conversation as "
        "the model reads it), or choose one: a known template, a Jinja file of your own, or the model's own. "
        f"Known templates: {names}.",
    )
    template.add_argument("model", metavar="ID_OR_NAME", help="the model (its id or exact name)")
    choice = template.add_mutually_exclusive_group()
    choice.add_argument(
        "--use", choices=list(KNOWN_TEMPLATES), metavar="NAME", help=f"a known template: {names}"
    )
    choice.add_argument("--file", type=Path, metavar="FILE", help="a Jinja chat template of your own")
    choice.add_argument("--own", action="store_true", help="go back to the model's own template")
    template.set_defaults(command_handler=_cmd_template)


def _cmd_template(args: argparse.Namespace, paths: AppPaths) -> int:
    """Show the model's template, after storing the choice asked for."""
    from desktop_dpo.cli import EXIT_OK, _fail, _find_model, _no_model, _open_store

    try:
        with _open_store(paths) as store:
            model = _find_model(store, args.model)
            if model is None:
                return _no_model(args.model)
            if args.use is not None:
                set_template_choice(store, model.id, TemplateChoice("known", name=args.use))
            elif args.file is not None:
                try:
                    text = args.file.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    return _fail(
                        f"Cannot read {args.file}: {exc}. Give a UTF-8 text file with a Jinja template."
                    )
                set_template_choice(store, model.id, TemplateChoice("custom", text=text))
            elif args.own:
                set_template_choice(store, model.id, None)
            model = store.get_model(model.id) or model
    except DesktopDpoError as exc:
        return _fail(str(exc))
    status = template_status(model)
    bos, eos = special_tokens(model)
    template = template_for(model)
    print(f"{model.name} (model {model.id}): {status.message}")
    if status.needs_choice:
        print(f"Choose one with: desktop-dpo template {model.id} --use NAME (or --file FILE)")
        return EXIT_OK
    print(f"It {marker_hint(template, bos, eos)}. A sample conversation, as the model reads it:")
    print()
    print(check_template(template, bos, eos) if template else check_template(KNOWN_TEMPLATES["plain"].text))
    return EXIT_OK

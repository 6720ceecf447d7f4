"""Placeholder while this command is being built (replaced by its real module)."""


def add_arguments(parser) -> None:
    parser.add_argument("rest", nargs="*")


def run(args) -> None:
    from lightning_modules.errors import UserError

    raise UserError("this command is not built yet")

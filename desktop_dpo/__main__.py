"""``python -m desktop_dpo``."""

from desktop_dpo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

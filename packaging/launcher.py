"""The standalone app's executable (PyInstaller runs this file as ``__main__``)."""

from desktop_dpo.frozen import main

raise SystemExit(main())

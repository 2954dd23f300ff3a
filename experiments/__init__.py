"""The experiments: runnable scripts (`python experiments/<name>.py --help`), importable as a package."""

"""Stage scripts: each `python -m stages.<name>` is one dvc.yaml stage (see dvc.yaml)."""

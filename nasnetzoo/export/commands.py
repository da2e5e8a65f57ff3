"""Click commands of this subpackage; nasnetzoo.cli adds every command listed in COMMANDS."""
COMMANDS: list = []

"""One module per CLI command; registered in edgekit.cli.COMMANDS."""

"""What the CLI tests share: running the program in this process, and the inventory of commands the secret checks
run (importable from any test folder, like ``oauth`` and ``faults``)."""

"""Programs on top of the library: the command line (cli.py, `mambaret` / `python3 -m mambaret`).
The library never imports this package."""

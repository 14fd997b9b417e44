"""The difix3d command: Lightning's own subcommands (fit / validate / test / predict) over this
project's modules, data and callbacks (`difix3d.cli`). Installed with pip as `difix3d`."""

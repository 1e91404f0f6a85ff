"""Engine adapters: option records, command-line parsing and building, process control."""

"""`autointerp export`: a database's results in another tool's layout. One module per format (flat.py: one JSON or
CSV file; delphi.py: delphi's folders; neuronpedia.py: Neuronpedia's dataset folder), what they share in common.py,
and formats.py, the registry that names them and dispatches `export`."""

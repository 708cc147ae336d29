"""What a run leaves on disk: the formats (``records``) and the files that hold them (``stores``).

``records`` owns every on-disk format (stored config, trial row, run state), versioned;
``stores`` writes and reads them atomically; ``lock`` keeps a second run out of an output folder or a
run folder. Nothing else reads a record's keys by name.

Imports: ``core`` only.
"""

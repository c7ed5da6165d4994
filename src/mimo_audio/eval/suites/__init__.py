"""The evaluation suites, one module each (built by name with :func:`mimo_audio.eval.make_suite`)."""

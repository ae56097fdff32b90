"""The pair strategies, one module each: a pure, vectorised rule over the flattened judgments and ``run(cfg,
judged)``, declared by a literal ``STRATEGY = {"name": ..., <capabilities>, "help": ...}`` that
:data:`prefopt.pairing.registry.STRATEGIES` reads without importing the module. Adding a strategy is one new file
(and its test), named nowhere else. The building blocks they share are in :mod:`prefopt.pairing.candidates`.
"""

"""The judges, one module each: a literal declaration ``JUDGE = {"name": ..., <capabilities>, "help": ...}`` that
:data:`prefopt.judging.registry.JUDGES` reads without importing the module, and ``make(cfg, model_path) -> Judge``,
the judge a recipe's judging section asks for. Adding a judge is one new file (and its test), named nowhere else;
what the judges share is in :mod:`prefopt.judging.base`.
"""

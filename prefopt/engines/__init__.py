"""The engines that generate, judge and evaluate: one module per engine, declared by a literal ``ENGINE = {"name": ...,
<capabilities>, "entry": <its class>, "help": ...}`` that :data:`prefopt.engines.registry.ENGINES` reads without
importing the module. Adding an engine is one new file (and its test), named nowhere else; what the engines share
is in :mod:`prefopt.engines.base`.
"""

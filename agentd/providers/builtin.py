"""Registers the providers that ship with agentd, through the same hook as any plugin."""
from agentd.hookspecs import hookimpl
from agentd.providers.demo import DemoProvider
from agentd.providers.openai import PRESETS, preset_factory


@hookimpl(trylast=True)
def register_providers(register):
    for name in PRESETS:
        register(name, preset_factory(name))
    register("demo", DemoProvider)

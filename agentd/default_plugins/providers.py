"""Registers the providers that ship with agentd, through the same hook as any plugin."""
from agentd.hookspecs import hookimpl
from agentd.providers.anthropic import AnthropicProvider
from agentd.providers.demo import DemoProvider
from agentd.providers.google import GoogleProvider
from agentd.providers.openai import PRESETS, preset_factory


@hookimpl(trylast=True)
def register_providers(register):
    for name in PRESETS:
        register(name, preset_factory(name))
    register("anthropic", AnthropicProvider)
    register("google", GoogleProvider)
    register("gemini", GoogleProvider)  # the name people reach for first
    register("demo", DemoProvider)

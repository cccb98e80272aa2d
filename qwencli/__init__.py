"""qwencli: pick, download and chat with the right Qwen model for this computer."""

__version__ = "0.1.0"

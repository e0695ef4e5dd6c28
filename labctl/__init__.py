"""labctl: throwaway Pacemaker test labs on one libvirt host."""

__version__ = "0.1.0"

"""Board project templates (installed as ``tvm_tinyseg.microtvm_projects``): one directory per
project kind, copied into a compiled model's directory by ``tvm_tinyseg.boards``."""
import os

TEMPLATES_DIR = os.path.dirname(os.path.abspath(__file__))


def template_dir(kind: str) -> str:
    """The template directory of a project kind, e.g. ``template_dir("qemu_cortex_m")``."""
    return os.path.join(TEMPLATES_DIR, kind)

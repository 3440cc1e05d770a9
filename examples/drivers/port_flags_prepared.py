"""The porting guide's port of ``port_flags_legacy.py`` (docs/mmap-prepare.md §2): the same flags and
vm_ops set in ``mmap_prepare``.  The one difference ``vmalab port-check`` reports is the documented one:
adjacent mappings merge.  The class is the guide's block verbatim (tests/lab/test_portcheck.py checks).
"""

from vmalab import constants as C
from vmalab.files import FileOperations, VmOperations


class MyVmOps(VmOperations):
    pass

class PreparedFlags(FileOperations):
    has_mmap_prepare = True
    def mmap_prepare(self, desc):
        desc.vm_flags |= C.VM_DONTCOPY | C.VM_DONTDUMP
        desc.vm_ops = MyVmOps()
        return 0

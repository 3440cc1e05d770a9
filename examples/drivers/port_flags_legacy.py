"""The porting guide's legacy flags driver (docs/mmap-prepare.md §2): sets flags and vm_ops in ``->mmap``.

``vmalab port-check examples/drivers/port_flags_legacy.py examples/drivers/port_flags_prepared.py``
compares it with its port.  The class is the guide's block verbatim (tests/lab/test_portcheck.py checks).
"""

from vmalab import constants as C
from vmalab.files import FileOperations, VmOperations


class MyVmOps(VmOperations):
    pass

class LegacyFlags(FileOperations):
    has_mmap = True
    def mmap(self, file, vma):
        vma.vm_flags |= C.VM_DONTCOPY | C.VM_DONTDUMP
        vma.vm_ops = MyVmOps()
        return 0

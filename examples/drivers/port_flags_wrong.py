"""WRONG (on purpose): a port of ``port_flags_legacy.py`` that forgets VM_DONTCOPY.

``vmalab port-check examples/drivers/port_flags_legacy.py examples/drivers/port_flags_wrong.py`` reports
the VmFlags that lack ``dc`` and the fork child that inherits the mapping (exit status 1).
"""

from vmalab import constants as C
from vmalab.driver import VmAreaDesc
from vmalab.files import FileOperations, VmOperations


class MyVmOps(VmOperations):
    pass


class ForgetfulFlags(FileOperations):
    has_mmap_prepare = True

    def mmap_prepare(self, desc: VmAreaDesc) -> int:
        desc.vm_flags |= C.VM_DONTDUMP  # BUG: VM_DONTCOPY forgotten
        desc.vm_ops = MyVmOps()
        return 0

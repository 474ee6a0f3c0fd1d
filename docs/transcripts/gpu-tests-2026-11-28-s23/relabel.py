# Relabels every stored cubin as compiled by another NVRTC build of the same
# release, as a database prewarmed with the toolkit's NVRTC looks to a
# process whose PyTorch wheel ships another build of it.
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n = db.execute("UPDATE cubins SET nvrtc_version = substr(nvrtc_version, 1, instr(nvrtc_version, ' '))"
               " || 'build-id=0000000000000000000000000000000000000000'").rowcount
db.commit()
print("relabelled", n, "cubins:", [r[0] for r in db.execute("SELECT DISTINCT nvrtc_version FROM cubins")])

# Folder for a copy of libkda.so placed here at install time (KDA_BUILD_DIR).

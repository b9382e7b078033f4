"""What measures answers: task measures (agreement, box recall, mAP, text-line F), `trtrepo eval` against served
variants and `trtrepo compare` of two variants layer by layer. Imports serving (the client), format, engines and
models; never the build."""

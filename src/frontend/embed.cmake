# Turns a file into a C string constant: cmake -DIN=page.html -DOUT=page.c -DNAME=frontend_page_html
# -P embed.cmake. The page is written as a byte array so no character needs escaping.
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n    "
       bytes "${bytes}")
file(WRITE ${OUT} "/* Generated from ${IN} by embed.cmake; do not edit. */\n"
                  "const char ${NAME}[] = {\n    ${bytes}0x00};\n")

# Turns web/chat.html into a C++ header (a raw string literal) at configure time, so that the chat page
# is compiled into the binary. Editing the page re-runs CMake (CMAKE_CONFIGURE_DEPENDS); the header is
# rewritten only when its content changes. Included from the top-level CMakeLists.txt.
set(LLAMARUN_CHAT_PAGE ${PROJECT_SOURCE_DIR}/web/chat.html)
set(LLAMARUN_GENERATED_DIR ${PROJECT_BINARY_DIR}/generated)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${LLAMARUN_CHAT_PAGE})
file(READ ${LLAMARUN_CHAT_PAGE} LLAMARUN_CHAT_PAGE_TEXT)
string(FIND "${LLAMARUN_CHAT_PAGE_TEXT}" ")llamarun_page\"" LLAMARUN_CHAT_PAGE_BAD)
if(NOT LLAMARUN_CHAT_PAGE_BAD EQUAL -1)
  message(FATAL_ERROR "web/chat.html contains the raw-string delimiter )llamarun_page\"")
endif()
file(WRITE ${LLAMARUN_GENERATED_DIR}/chat_page_html.h.tmp
  "// Generated from web/chat.html by web/embed.cmake; do not edit.\n#pragma once\n"
  "static const char kChatPageHtml[] = R\"llamarun_page(${LLAMARUN_CHAT_PAGE_TEXT})llamarun_page\";\n")
configure_file(${LLAMARUN_GENERATED_DIR}/chat_page_html.h.tmp ${LLAMARUN_GENERATED_DIR}/chat_page_html.h COPYONLY)

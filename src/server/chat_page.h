// The chat page served at GET / (and /index.html) by `llamarun serve`: web/chat.html, compiled into the
// binary by web/embed.cmake. It needs no API key itself; the API calls it makes send the key the user
// types in.
#pragma once

#include <string>

#include "server/http_server.h"

namespace llamarun::server {

// True for the paths the page is served at.
bool is_chat_page_path(const std::string& path);

// 200, text/html, the page; cacheable for a short while (it changes only with the binary).
HttpResponse chat_page_response();

}  // namespace llamarun::server

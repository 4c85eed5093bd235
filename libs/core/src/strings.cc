#include "medgrid/core/strings.h"

namespace medgrid::core {

std::vector<std::string_view> StrSplit(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    std::size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

std::string StrReplaceAll(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  std::size_t start = 0;
  while (true) {
    std::size_t pos = from.empty() ? std::string_view::npos : s.find(from, start);
    if (pos == std::string_view::npos) {
      out.append(s.substr(start));
      return out;
    }
    out.append(s.substr(start, pos - start));
    out.append(to);
    start = pos + from.size();
  }
}

}  // namespace medgrid::core

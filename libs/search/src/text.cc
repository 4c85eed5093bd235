#include "medgrid/search/text.h"

#include "unicode/normalizer2.h"
#include "unicode/uchar.h"
#include "unicode/unistr.h"
#include "unicode/utf8.h"

namespace medgrid::search {

std::string FoldText(std::string_view text) {
  // ASCII fast path: most index values are plain ASCII.
  bool ascii = true;
  for (char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      ascii = false;
      break;
    }
  }
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  auto put = [&](UChar32 c) {
    if (u_isUWhiteSpace(c)) {
      pending_space = !out.empty();
      return;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      return;
    }
    char buf[U8_MAX_LENGTH];
    int32_t len = 0;
    UBool error = false;
    U8_APPEND(buf, len, U8_MAX_LENGTH, c, error);
    if (!error) out.append(buf, static_cast<std::size_t>(len));
  };
  if (ascii) {
    for (char c : text) {
      unsigned char u = static_cast<unsigned char>(c);
      put(u >= 'A' && u <= 'Z' ? u + 32 : u);
    }
    return out;
  }
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfd = icu::Normalizer2::getNFDInstance(status);
  if (U_FAILURE(status)) return std::string(text);
  icu::UnicodeString decomposed =
      nfd->normalize(icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size()))),
                     status);
  if (U_FAILURE(status)) return std::string(text);
  for (int32_t i = 0; i < decomposed.length();) {
    UChar32 c = decomposed.char32At(i);
    i += U16_LENGTH(c);
    if (c == 0xFFFD) continue;  // what fromUTF8 makes of invalid input
    if (u_charType(c) == U_NON_SPACING_MARK) continue;
    put(u_foldCase(c, U_FOLD_CASE_DEFAULT));
  }
  return out;
}

}  // namespace medgrid::search

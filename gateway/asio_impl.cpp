// The one translation unit that compiles Asio, Asio-SSL and Beast
// (BOOST_ASIO_SEPARATE_COMPILATION / BOOST_BEAST_SEPARATE_COMPILATION): every
// other file only instantiates the templates it uses, which keeps 2-core
// builds tolerable.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>

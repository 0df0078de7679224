# The Debian package, made by CPack from this build tree without compiling
# anything again: `cpack` in the build directory (or scripts/package.sh, or
# the `package` target) writes rampart_<version>-<revision>_<arch>.deb.
#
# It holds what `cmake --install` puts under the prefix /usr (the binaries, the
# unit, its tmpfiles.d entry, the example) plus the files only a package
# has, in the install component "deb" that a plain `cmake --install` leaves
# out: the example as the conffile /etc/rampart/rampart.yaml, the logrotate
# file, the copyright file, the Debian changelog and lintian's overrides. Maintainer scripts and
# those files are in packaging/debian/.

set(rampart_deb_dir ${PROJECT_SOURCE_DIR}/packaging/debian)

# The Debian revision comes from the first entry of packaging/debian/changelog,
# which must be this version: the package and its changelog never disagree.
file(STRINGS ${rampart_deb_dir}/changelog rampart_deb_head LIMIT_COUNT 1)
if(NOT rampart_deb_head MATCHES "^rampart \\(([^)]+)-([^)-]+)\\) ")
  message(FATAL_ERROR "${rampart_deb_dir}/changelog: the first line must read "
                      "'rampart (<version>-<revision>) <suite>; urgency=...', not '${rampart_deb_head}'")
endif()
set(rampart_deb_version ${CMAKE_MATCH_1})
set(rampart_deb_revision ${CMAKE_MATCH_2})
if(NOT rampart_deb_version STREQUAL PROJECT_VERSION)
  message(FATAL_ERROR "${rampart_deb_dir}/changelog: its latest entry is ${rampart_deb_version}, the project is "
                      "${PROJECT_VERSION}: add an entry for ${PROJECT_VERSION}")
endif()
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${rampart_deb_dir}/changelog)

# Debian wants the changelog compressed with gzip -9, and -n keeps the package
# reproducible (no name or time stamp in the gzip header).
file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/packaging)
execute_process(COMMAND gzip -9nc ${rampart_deb_dir}/changelog
                OUTPUT_FILE ${PROJECT_BINARY_DIR}/packaging/changelog.Debian.gz
                RESULT_VARIABLE rampart_gzip_result)
if(NOT rampart_gzip_result EQUAL 0)
  message(FATAL_ERROR "gzip -9n of ${rampart_deb_dir}/changelog failed: ${rampart_gzip_result}")
endif()

install(FILES config/examples/foobar.yaml DESTINATION /etc/rampart RENAME rampart.yaml
        COMPONENT deb EXCLUDE_FROM_ALL)
install(FILES ${rampart_deb_dir}/logrotate DESTINATION /etc/logrotate.d RENAME rampart
        COMPONENT deb EXCLUDE_FROM_ALL)
install(FILES ${rampart_deb_dir}/copyright ${PROJECT_BINARY_DIR}/packaging/changelog.Debian.gz
        DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT deb EXCLUDE_FROM_ALL)
install(FILES ${rampart_deb_dir}/lintian-overrides DESTINATION ${CMAKE_INSTALL_DATADIR}/lintian/overrides
        RENAME rampart COMPONENT deb EXCLUDE_FROM_ALL)

set(RAMPART_DEB_MAINTAINER "Rampart maintainers <maintainers@users.noreply.b-seed-573f89de.example>"
    CACHE STRING "The Maintainer field of the Debian package")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME rampart)
set(CPACK_PACKAGE_VENDOR "Rampart maintainers")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "HTTPS edge gateway with a per-role nftables firewall and VRRP failover")
set(CPACK_PACKAGE_DESCRIPTION "\
Rampart terminates HTTPS (TLS 1.2 and 1.3, HTTP/1.1) and balances requests
over health-checked application servers with keep-alive connection reuse,
strict limits and timeouts, security headers, metrics, JSON access logs and
reload without loss. One master process and one sandboxed worker per core.
It also programs each host's nftables firewall by role from the same
deployment file, pushes abusive clients into a kernel blocklist, and runs
as an active/passive pair on a VRRP virtual address through keepalived.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# Both install components: the default one (what `cmake --install` installs)
# and "deb".
set(CPACK_INSTALL_CMAKE_PROJECTS "${PROJECT_BINARY_DIR};rampart;ALL;/" "${PROJECT_BINARY_DIR};rampart;deb;/")
set(CPACK_STRIP_FILES ON)
set(CPACK_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)

set(CPACK_DEBIAN_PACKAGE_VERSION ${rampart_deb_version})
set(CPACK_DEBIAN_PACKAGE_RELEASE ${rampart_deb_revision})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${RAMPART_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION httpd)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# dpkg-shlibdeps (dpkg-dev) computes the shared libraries' packages; nftables
# is for `rampart firewall` and the blocklist, keepalived for the HA pair.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "nftables")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "keepalived")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${rampart_deb_dir}/postinst ${rampart_deb_dir}/prerm ${rampart_deb_dir}/postrm ${rampart_deb_dir}/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# No source package: the repository is the source.
set(CPACK_SOURCE_GENERATOR "")
include(CPack)
